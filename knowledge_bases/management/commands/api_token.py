"""python manage.py api_token USER [--name NAME] [--revoke PREFIX]"""

from __future__ import annotations

import argparse
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from knowledge_bases.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user (printed once), or revoke one by its prefix."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("user", help="username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument(
            "--revoke", metavar="PREFIX", help="revoke the user's token with this prefix"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user {options['user']!r}")
        if options["revoke"]:
            prefix = options["revoke"]
            if len(prefix) != ApiToken.PREFIX_LENGTH:
                raise CommandError(
                    f"give the whole {ApiToken.PREFIX_LENGTH}-character prefix of the token to "
                    "revoke (the admin lists them): a shorter one could match several"
                )
            count = ApiToken.objects.filter(
                user=user, key_prefix=prefix, revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            if not count:
                raise CommandError(f"no active token of {user} with the prefix {prefix!r}")
            self.stdout.write(f"revoked {count} token(s)")
            return
        _row, token = ApiToken.issue(user=user, name=options["name"][:100])
        self.stdout.write(token)
