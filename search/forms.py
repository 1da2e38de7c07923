from __future__ import annotations

from django import forms

from ragstudio.bounds import QUERY_MAX_CHARS
from search.vocabulary import DEFAULT_FUSION, DEFAULT_MODE, FUSION_LABELS, MODE_LABELS

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

    def __init__(self, *args, numbers: list[int], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        choices = [(str(n), f"#{n}") for n in numbers]
        self.fields["generation"].choices = [("", "Active"), *choices]  # type: ignore[attr-defined]
        self.fields["compare"].choices = [("", "(none)"), *choices]  # type: ignore[attr-defined]
