from __future__ import annotations

import json
from datetime import UTC, datetime, time

from django import forms

from ragstudio.core.bounds import EVAL_GRADE, QUERY_MAX_CHARS, ROW_ID, SEARCH_OFFSET
from ragstudio.core.vocabulary import DEFAULT_FUSION, DEFAULT_MODE, FUSION_LABELS, MODE_LABELS

# The playground shows at most this many results a column (two columns side by side).
PLAYGROUND_MAX_LIMIT = 50


class SearchForm(forms.Form):
    q = forms.CharField(max_length=QUERY_MAX_CHARS, label="Query", strip=True)
    mode = forms.ChoiceField(
        choices=list(MODE_LABELS.items()), initial=DEFAULT_MODE, required=False
    )
    fusion = forms.ChoiceField(
        choices=list(FUSION_LABELS.items()), initial=DEFAULT_FUSION, required=False
    )
    generation = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    compare = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Compare with"
    )
    limit = forms.IntegerField(
        min_value=1,
        max_value=PLAYGROUND_MAX_LIMIT,
        initial=10,
        required=False,
        label="Results per page",
    )
    page = forms.IntegerField(
        min_value=1, max_value=SEARCH_OFFSET.high // PLAYGROUND_MAX_LIMIT, required=False
    )
    # Filters, as the API's `filters` (the page sends the same SearchIn).
    doc = forms.CharField(max_length=200, required=False, label="Document name contains")
    meta = forms.CharField(
        max_length=1000,
        required=False,
        label="Metadata",
        help_text="key=value, several separated by ';' (all must hold)",
    )
    after = forms.DateField(
        required=False, label="Uploaded from", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.DateField(
        required=False, label="Uploaded before", widget=forms.DateInput(attrs={"type": "date"})
    )
    min_score = forms.FloatField(required=False, label="Minimum score")
    # With a set named here, each result can be marked relevant or not for the query, and
    # the set is built while searching (created at the first mark).
    set = forms.RegexField(
        regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        max_length=64,
        required=False,
        label="Evaluation set",
        error_messages={"invalid": "a set name is letters, digits, '.', '_' or '-'"},
    )

    def __init__(self, *args, numbers: list[int], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        choices = [(str(n), f"#{n}") for n in numbers]
        self.fields["generation"].choices = [("", "Active"), *choices]  # type: ignore[attr-defined]
        self.fields["compare"].choices = [("", "(none)"), *choices]  # type: ignore[attr-defined]

    def clean_meta(self) -> dict[str, object]:
        """`year=2020; topic=biology` as the API's metadata filter: numbers and true/false
        as JSON reads them, anything else as text."""
        conditions: dict[str, object] = {}
        for part in self.cleaned_data["meta"].split(";"):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key:
                raise forms.ValidationError(f"{part.strip()!r} is not key=value")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            if not isinstance(value, bool | int | float | str):
                value = raw
            conditions[key] = value
        return conditions

    def filters(self) -> dict[str, object] | None:
        """The API's `filters` body for what the form asks (None: no filter)."""
        data = self.cleaned_data
        filters: dict[str, object] = {}
        if data["meta"]:
            filters["metadata"] = data["meta"]
        if data["doc"]:
            filters["document_name"] = data["doc"]
        for field, key in (("after", "uploaded_after"), ("before", "uploaded_before")):
            if data[field] is not None:
                filters[key] = datetime.combine(data[field], time.min, tzinfo=UTC)
        return filters or None


class EvalImportForm(forms.Form):
    name = forms.RegexField(
        regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        max_length=64,
        label="Set name",
        error_messages={
            "invalid": "letters, digits, '.', '_' or '-', starting with one of the first two"
        },
    )
    file = forms.FileField(label="JSON Lines file")


class JudgeForm(forms.Form):
    set = forms.RegexField(regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", max_length=64)
    q = forms.CharField(max_length=QUERY_MAX_CHARS)
    document_id = forms.IntegerField(min_value=ROW_ID.low, max_value=ROW_ID.high)
    record_id = forms.CharField(max_length=200, required=False)
    chunk_id = forms.CharField(max_length=64, required=False)
    grade = forms.IntegerField(min_value=EVAL_GRADE.low, max_value=EVAL_GRADE.high)
