"""The lock files pin what pyproject.toml names: the app's closure in requirements.lock
(what `make run` installs), the test tools on top in requirements-dev.lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>~ ]", requirement, maxsplit=1)[0]).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-r")):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            pins[_name(name)] = version
    return pins


def test_each_dependency_is_pinned_in_its_lock_and_only_there() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pins(ROOT / "requirements.lock")
    dev = _pins(ROOT / "requirements-dev.lock")
    assert "-r requirements.lock" in (ROOT / "requirements-dev.lock").read_text()
    assert not set(runtime) & set(dev)
    for requirement in project["dependencies"]:
        assert runtime.get(_name(requirement)) == requirement.split("==")[1], requirement
    for requirement in project["optional-dependencies"]["dev"]:
        assert dev.get(_name(requirement)) == requirement.split("==")[1], requirement
    # The app runs without the test tools.
    assert not {"pytest", "playwright", "schemathesis", "moto", "mypy", "ruff"} & set(runtime)
