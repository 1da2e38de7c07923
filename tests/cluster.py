"""A real django-q2 cluster (`manage.py qcluster`) in its own process, sharing the test's
database file, data directory and secret key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for a server the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)  # polling database state, bounded by the deadline
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_http(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    """Wait until a server the test started answers ``url`` with 200."""

    def answers() -> bool:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False  # still starting

    wait_for(answers, timeout, f"{url} to answer")


def cluster_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # The same directories the test process uses (see the autouse storage fixture).
    return subprocess_env(
        tmp_path / "data",
        **{"RAGSTUDIO_WORKERS": "2", "RAGSTUDIO_HEARTBEAT_STALE_SECONDS": "5", **extra},
    )


def start_cluster(tmp_path: Path, name: str = "qcluster", **env: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "a")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=cluster_env(tmp_path, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so the whole cluster (all its processes) can be killed
    )


def stop_cluster(proc: subprocess.Popen, *, kill: bool = False) -> None:
    if proc.poll() is not None:
        return
    if kill:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGTERM)  # the cluster stops its own workers
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
