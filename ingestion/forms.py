"""The source form of the Sources tab: one set of fields for every kind, turned into the
kind's settings (the connector checks them)."""

from __future__ import annotations

from typing import Any

from django import forms

from ragstudio.core.bounds import SOURCE_SCHEDULE_MINUTES
from ragstudio.core.vocabulary import SOURCE_KIND_LABELS, SOURCE_KINDS


class SourceForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=[(k, SOURCE_KIND_LABELS[k]) for k in SOURCE_KINDS])
    location = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=20_000,
        help_text="folder: its path · s3: s3://bucket/prefix · web: page addresses, one a "
        "line, or a sitemap address ending in .xml · git: a path or an https URL",
    )
    include = forms.CharField(
        required=False, max_length=2000, help_text="patterns, space-separated (default: *)"
    )
    branch = forms.CharField(required=False, max_length=200, help_text="git only")
    endpoint = forms.CharField(required=False, max_length=500, help_text="s3 only")
    region = forms.CharField(required=False, max_length=50, help_text="s3 only")
    access_key_env = forms.CharField(
        required=False, max_length=100, help_text="s3: the environment variable of the key id"
    )
    secret_key_env = forms.CharField(
        required=False, max_length=100, help_text="s3: the environment variable of the secret"
    )
    schedule_minutes = forms.IntegerField(
        min_value=SOURCE_SCHEDULE_MINUTES.low,
        max_value=SOURCE_SCHEDULE_MINUTES.high,
        initial=60,
        help_text="minutes between syncs (0: only when asked)",
    )
    delete_missing = forms.BooleanField(
        required=False, initial=True, label="Delete documents whose file the source removed"
    )

    def config(self) -> dict[str, Any]:
        """The kind's settings from the fields that apply to it."""
        data = self.cleaned_data
        kind, location = data["kind"], data["location"].strip()
        include = data["include"].split()
        config: dict[str, Any] = {}
        if kind == "folder":
            config["path"] = location
        elif kind == "s3":
            config["uri"] = location
            for name in ("endpoint", "region", "access_key_env", "secret_key_env"):
                if data[name]:
                    config[name] = data[name].strip()
        elif kind == "web":
            lines = [line.strip() for line in location.splitlines() if line.strip()]
            if len(lines) == 1 and lines[0].split("?")[0].endswith(".xml"):
                config["sitemap"] = lines[0]
            else:
                config["urls"] = lines
        else:
            config["repository"] = location
            if data["branch"]:
                config["branch"] = data["branch"].strip()
        if include and kind != "web":
            config["include"] = include
        return config
