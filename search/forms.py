from __future__ import annotations

from django import forms

from ragstudio.core.bounds import EVAL_GRADE, QUERY_MAX_CHARS, ROW_ID
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
        min_value=1, max_value=PLAYGROUND_MAX_LIMIT, initial=10, required=False
    )
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
