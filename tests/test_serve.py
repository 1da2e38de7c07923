"""`manage.py serve` (what `make run` ends with): a real server and worker; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import free_port, wait_for, wait_for_http
from tests.helpers import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]
ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_serve_answers_and_ctrl_c_stops_server_and_worker(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=subprocess_env(tmp_path / "data"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/accounts/login/")
        workers = _children(proc.pid)
        assert workers, "no qcluster child process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) is not None
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        if proc.poll() is None:
            proc.kill()


def _descendants(pid: int) -> set[int]:
    """Every process below pid (from /proc: each process's parent)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def test_ctrl_c_to_the_process_group_during_a_job_stops_everything_in_10_s(
    tmp_path: Path,
) -> None:
    """Issue 10, case 7: the terminal sends SIGINT to the whole foreground group; workers
    of the cluster were still running a minute later. A job is running when it comes."""
    from ingestion.models import IngestionJob
    from tests.factories import make_kb, make_user, text, upload

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=subprocess_env(tmp_path / "data", RAGSTUDIO_HEARTBEAT_STALE_SECONDS="5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    seen: set[int] = set()
    try:
        kb = make_kb(make_user(), "busy")
        job = upload(kb, [("long.txt", text(3000, "tides"))], enqueue=True).job

        def running() -> bool:
            seen.update(_descendants(proc.pid))
            return IngestionJob.objects.get(pk=job.pk).status == "running"

        wait_for(running, 90, "the job to be running")
        assert len(seen) >= 2, seen  # the cluster and its worker processes
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (_alive(proc.pid) or any(_alive(p) for p in seen)):
            seen.update(_descendants(proc.pid))
            time.sleep(0.2)  # polling process state, bounded by the deadline
        assert not _alive(proc.pid)
        assert [p for p in seen if _alive(p)] == []
        # The job was cut short, not lost: it is resumable (running with a heartbeat that
        # goes stale, or queued, or it had just finished).
        assert IngestionJob.objects.get(pk=job.pk).status in ("running", "queued", "succeeded")
    finally:
        for pid in [proc.pid, *seen]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_runs_gunicorn_workers_with_static_files_and_debug_off(tmp_path: Path) -> None:
    """Issue 12: the pages, the API and /api/docs with DEBUG off, without runserver: static
    files (the app's and Swagger UI's) come from WhiteNoise."""
    import json
    import re
    import urllib.request

    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=subprocess_env(
            tmp_path / "data", RAGSTUDIO_DEBUG="false", RAGSTUDIO_PRELOAD_MODELS="1"
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", timeout=120)
        with urllib.request.urlopen(f"{base}/readyz") as response:
            assert json.loads(response.read())["models"] == ["local-fast"]
        tree = _descendants(proc.pid)
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree if _alive(pid)}
        gunicorn = [pid for pid, cmd in commands.items() if b"gunicorn" in cmd]
        assert len(gunicorn) >= 3, commands  # the master and its two workers
        assert any(b"qcluster" in cmd for cmd in commands.values())
        with urllib.request.urlopen(f"{base}/api/docs") as response:
            docs = response.read().decode()
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', docs)
        login = urllib.request.urlopen(f"{base}/accounts/login/").read().decode()
        assets += re.findall(r'(?:src|href)="(/static/[^"]+)"', login)
        assert any("htmx" in a for a in assets) and any("swagger" in a.lower() for a in assets)
        for asset in assets:
            with urllib.request.urlopen(base + asset) as response:
                assert response.status == 200 and len(response.read()) > 0, asset
        with urllib.request.urlopen(f"{base}/static/css/app.css") as response:
            assert response.headers["Content-Type"].startswith("text/css")
        # /metrics adds up what every web process counted (issue 28): each request is
        # counted once, whichever of the two workers answered it.
        for _ in range(12):
            urllib.request.urlopen(f"{base}/healthz").read()
        with urllib.request.urlopen(f"{base}/metrics") as response:
            scraped = response.read().decode()
        healthz = [
            float(line.rsplit(" ", 1)[1])
            for line in scraped.splitlines()
            if line.startswith("ragstudio_http_requests_total{")
            and 'route="healthz"' in line
            and 'status="200"' in line
        ]
        assert sum(healthz) == 12, scraped
        written = {f.name for f in (tmp_path / "data" / "metrics").iterdir()}
        assert any(name.startswith("counter_") for name in written), written
        # Each web process loaded the model before its first request, and said so once;
        # so did the worker; requests are not logged unless RAGSTUDIO_ACCESS_LOG asks.
        wait_for(lambda: "worker process" in log.read_text(), 120, "the worker's preload")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert [p for p in tree if _alive(p)] == []
    text = log.read_text()
    web = re.findall(r"web process (\d+) ready: local-fast loaded", text)
    assert len(set(web)) == len(web) == 2, text
    assert {int(pid) for pid in web} <= set(gunicorn)
    assert re.search(r"worker process \d+ ready: local-fast loaded", text), text
    assert "GET /static/css/app.css" not in text and "/readyz" not in text
    # No control socket shared with every other gunicorn of this user (issue 25, case 9).
    assert "Control socket" not in text


def test_slow_clients_do_not_hold_the_web_processes(tmp_path: Path) -> None:
    """Issue 25, case 4: two connections sending a body a byte a second held both
    synchronous web processes, and another user's GET waited. Twenty such connections,
    half stalled in their headers and half in a form's body, now leave the server free:
    a page and the health check still answer while they are open."""
    import socket
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--no-cluster"],
        cwd=ROOT,
        env=subprocess_env(tmp_path / "data", RAGSTUDIO_PRELOAD_MODELS="0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    slow: list[socket.socket] = []
    try:
        wait_for_http(f"{base}/accounts/login/", timeout=120)
        for n in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            if n % 2:
                sock.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            else:
                sock.sendall(
                    b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 100000\r\n\r\nusername=a"
                )
            slow.append(sock)
        # Each has sent its first bytes: each is being read, and none will finish.
        for path in ("/healthz", "/accounts/login/", "/healthz"):
            # A bound far above a normal answer: a held server never answers at all.
            with urllib.request.urlopen(base + path, timeout=20) as response:
                assert response.status == 200, path
    finally:
        for sock in slow:
            sock.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
