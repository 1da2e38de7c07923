"""moto's S3 server on loopback (a dev dependency), for the tests and the benchmarks that
need an object store: started on a port, waited for, with a bucket."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
REGION = "us-east-1"


def start_s3_server(port: int, bucket: str, log: IO[str] | None = None) -> subprocess.Popen:
    """Start ``moto_server`` on 127.0.0.1:port and create ``bucket``; the process runs
    until the caller stops it."""
    import boto3

    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise RuntimeError("moto_server is missing: moto[server] is a dev dependency")
    proc = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION, **CREDENTIALS
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return proc
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on port {port}") from None
            time.sleep(0.25)  # the server is still starting


def s3_options(endpoint: str) -> dict[str, str]:
    """LanceDB-style storage options for the server at ``endpoint``."""
    return {
        "aws_endpoint": endpoint,
        "aws_region": REGION,
        **CREDENTIALS,
        "allow_http": "true",
    }
