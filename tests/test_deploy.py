"""Settings fit for deployment (issue 11, case 9): `check --deploy` is clean once the
production toggles are on, every page carries a strict Content-Security-Policy, and
/api/docs loads Swagger UI from the installed static files, not a CDN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "RAGSTUDIO_SECURE_COOKIES": "true",
    "RAGSTUDIO_SSL_REDIRECT": "true",
    "RAGSTUDIO_HSTS_SECONDS": "31536000",
    "RAGSTUDIO_HSTS_PRELOAD": "true",
    "RAGSTUDIO_BEHIND_TLS_PROXY": "true",
}


def _check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=subprocess_env(tmp_path / "data", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.subprocess
def test_check_deploy_is_clean_with_the_production_toggles(tmp_path: Path) -> None:
    default = _check_deploy(tmp_path)
    assert default.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in default.stderr, default.stderr
    production = _check_deploy(tmp_path, **PRODUCTION)
    assert production.returncode == 0, production.stderr
    assert "no issues" in production.stdout


@pytest.mark.django_db
def test_pages_and_the_api_docs_carry_a_strict_csp(alice, login) -> None:
    client = login(alice)
    for url in ("/", "/api/docs", "/accounts/login/"):
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response["X-Frame-Options"] == "DENY"
    docs = client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in docs
    assert "jsdelivr" not in docs and "unpkg" not in docs
    assert "http://" not in docs and "https://" not in docs  # nothing from elsewhere
    assert "<script>" not in docs  # no inline script: only src= and JSON data blocks
