from __future__ import annotations

from django import forms

MODES = [("hybrid", "Hybrid"), ("vector", "Vector"), ("lexical", "Lexical (BM25)")]
FUSIONS = [("rrf", "RRF"), ("weighted", "Weighted"), ("adaptive", "Adaptive")]


class SearchForm(forms.Form):
    q = forms.CharField(max_length=2000, label="Query", strip=True)
    mode = forms.ChoiceField(choices=MODES, initial="hybrid", required=False)
    fusion = forms.ChoiceField(choices=FUSIONS, initial="rrf", required=False)
    generation = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    compare = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Compare with"
    )
    limit = forms.IntegerField(min_value=1, max_value=50, initial=10, required=False)

    def __init__(self, *args, numbers: list[int], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        choices = [(str(n), f"#{n}") for n in numbers]
        self.fields["generation"].choices = [("", "Active"), *choices]  # type: ignore[attr-defined]
        self.fields["compare"].choices = [("", "(none)"), *choices]  # type: ignore[attr-defined]
