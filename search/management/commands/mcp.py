"""`manage.py mcp --stdio`: the MCP server on stdin/stdout, for a local assistant that starts
it as a command. It acts as one user: the one an
API key names (`--key` or RAGSTUDIO_MCP_KEY), or, for the operator, `--user NAME`."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ragstudio.auth import key_user
from search.mcp_server import build_server, stdio_user


class Command(BaseCommand):
    help = "Serve the MCP tools on stdio (the HTTP endpoint is /mcp of `manage.py serve`)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout")
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--key", help="an API key (default: RAGSTUDIO_MCP_KEY)")
        who.add_argument("--user", help="act as this user (the operator's choice)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["stdio"]:
            raise CommandError("give --stdio (over HTTP the server is /mcp of `manage.py serve`)")
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
            if user is None:
                raise CommandError(f"no active user {options['user']!r}")
        else:
            key = options["key"] or os.environ.get("RAGSTUDIO_MCP_KEY", "")
            user = key_user(key) if key else None
            if user is None:
                raise CommandError(
                    "give --key, RAGSTUDIO_MCP_KEY or --user: a valid API key or a user"
                )
        with stdio_user(user):
            build_server().run("stdio")
