from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ragstudio.env import env_bool, env_float, env_int, env_list, env_path, env_str
from tests.helpers import subprocess_env


def test_defaults_apply_when_unset() -> None:
    assert env_int("X", 5, environ={}) == 5
    assert env_bool("X", True, environ={}) is True
    assert env_list("X", ["a"], environ={}) == ["a"]
    assert env_str("X", "d", environ={"X": ""}) == "d"


def test_values_are_parsed() -> None:
    assert env_int("X", 5, environ={"X": " 42 "}) == 42
    assert env_bool("X", False, environ={"X": "Yes"}) is True
    assert env_bool("X", True, environ={"X": "off"}) is False
    assert env_float("X", 1.0, environ={"X": "2.5"}) == 2.5
    assert env_list("X", [], environ={"X": "a, b,,c"}) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: env_int("RAGSTUDIO_N", 1, environ={"RAGSTUDIO_N": "ten"}),
            "RAGSTUDIO_N must be an integer",
        ),
        (lambda: env_int("N", 1, minimum=2, environ={"N": "1"}), "N must be >= 2"),
        (lambda: env_int("N", 1, maximum=3, environ={"N": "9"}), "N must be <= 3"),
        (lambda: env_bool("B", False, environ={"B": "maybe"}), "B must be a boolean"),
        (lambda: env_float("F", 1.0, environ={"F": "fast"}), "F must be a number"),
    ],
)
def test_bad_values_raise_improperly_configured(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImproperlyConfigured, match=message):
        call()


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(ImproperlyConfigured, match="must be a directory"):
        env_path("D", tmp_path, environ={"D": str(file)})


@pytest.mark.subprocess
def test_settings_refuse_bad_environment_at_startup(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=root,
        env=subprocess_env(tmp_path, RAGSTUDIO_STORE_BATCH_SIZE="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "RAGSTUDIO_STORE_BATCH_SIZE must be >= 1" in proc.stderr


def test_sqlite_runs_in_wal_mode_with_immediate_transactions(db) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the embedded database's settings (this run is on DATABASE_URL)")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert connection.settings_dict["OPTIONS"]["timeout"] >= 5


@pytest.mark.subprocess
def test_processes_starting_together_on_a_fresh_data_dir_share_one_private_key(
    tmp_path: Path,
) -> None:
    """Issue 11, case 6: the key file was written with the umask and chmod-ed afterwards,
    and two processes starting at once could end up with different keys."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from ragstudio.env import secret_key_file; "
        "print(secret_key_file(Path(sys.argv[1])))"
    )
    key = tmp_path / "secret_key"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(key)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(keys) == 1 and len(keys.pop()) > 40
    assert key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temp file left
