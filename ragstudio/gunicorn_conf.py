"""gunicorn settings `manage.py serve` passes (`--config python:ragstudio.gunicorn_conf`)."""

from __future__ import annotations

from typing import Any

# gunicorn's control socket lives at one path per user (~/.gunicorn/gunicorn.ctl): two
# `serve` instances on a host unlinked each other's. Nothing here uses it.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    # Runs in each web process after Django is loaded and before it accepts a request.
    from ragstudio.readiness import preload

    preload("web")
