from __future__ import annotations

from django import forms
from django.utils.text import slugify

from ingestion.services.uploads import MAX_PASSWORD_CHARS
from knowledge_bases.services.knowledge_bases import SLUG, SLUG_RULE
from ragstudio.core import languages
from ragstudio.core.bounds import CHUNK_OVERLAP, CHUNK_SIZE
from ragstudio.env import rag_settings

LANGUAGE_CHOICES = [
    (languages.AUTO, "auto (detect)"),
    *[(code, f"{code} ({name})") for code, name in languages.STEMMERS.items()],
    *[
        (code, f"{code} ({name}: each character a term)")
        for code, name in languages.UNSPACED.items()
    ],
    (languages.NO_STEMMING, "none (no stemming)"),
]


class KnowledgeBaseForm(forms.Form):
    name = forms.CharField(max_length=200)
    # Checked by the service, whose message says the same as this hint (Django's SlugField
    # allowed underscores and capitals the service then refused).
    slug = forms.CharField(
        max_length=64,
        required=False,
        help_text="lowercase letters, digits and hyphens; empty: made from the name",
        widget=forms.TextInput(attrs={"data-slug-from": "id_name"}),
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    embedder = forms.CharField(
        max_length=255, required=False, initial=lambda: rag_settings()["EMBEDDER"]
    )
    chunk_size = forms.IntegerField(
        min_value=CHUNK_SIZE.low, max_value=CHUNK_SIZE.high, required=False
    )
    chunk_overlap = forms.IntegerField(
        min_value=CHUNK_OVERLAP.low, max_value=CHUNK_OVERLAP.high, required=False
    )
    language = forms.ChoiceField(
        choices=LANGUAGE_CHOICES,
        initial=languages.DEFAULT,
        required=False,
        help_text="how keyword search stems words; auto: the documents' majority language",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].strip().lower()
        if slug and not SLUG.match(slug):
            raise forms.ValidationError(f"must be {SLUG_RULE}")
        return slug

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if not data.get("slug") and data.get("name"):
            data["slug"] = slug_from(str(data["name"]))
            if not data["slug"]:
                self.add_error("slug", "choose one: lowercase letters, digits and hyphens")
        return data


def slug_from(name: str) -> str:
    """A slug made from a name: what the page fills in as the name is typed."""
    return slugify(name).replace("_", "-").strip("-")[:64].strip("-")


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True}))
        # An empty file is refused by the upload service with its reason, on its own: the
        # form must not refuse the other files of the batch for it.
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):  # type: ignore[no-untyped-def]
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


def _password_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        strip=False,
        max_length=MAX_PASSWORD_CHARS,
        label="Password for encrypted PDFs and Office files (optional)",
        help_text="Opens them; they are stored decrypted and the password is not kept.",
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )


class UploadForm(forms.Form):
    # Django's form metaclass moves declared fields into base_fields, so this does not
    # shadow Form.files at run time.
    files = MultipleFileField()  # type: ignore[assignment]
    as_new = forms.BooleanField(
        required=False,
        label="Add as new documents (a file named like a document does not replace it)",
    )
    password = _password_field()


class ReplaceForm(forms.Form):
    file = forms.FileField()
    password = _password_field()


class RebuildForm(forms.Form):
    embedder = forms.CharField(
        max_length=255, required=False, help_text="empty: the knowledge base's model"
    )
    chunk_size = forms.IntegerField(
        min_value=CHUNK_SIZE.low, max_value=CHUNK_SIZE.high, required=False
    )
    chunk_overlap = forms.IntegerField(
        min_value=CHUNK_OVERLAP.low, max_value=CHUNK_OVERLAP.high, required=False
    )
    language = forms.ChoiceField(
        choices=[("", "(the knowledge base's)"), *LANGUAGE_CHOICES],
        required=False,
        help_text="keyword search's stemming; auto: the documents' majority language",
    )
    auto_promote = forms.BooleanField(
        required=False, initial=True, label="Promote when it passes its check"
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what it is for, e.g. the Dify app")
    scope = forms.ChoiceField(
        choices=[("read", "read-only: search and read"), ("write", "read-write")],
        initial="read",
    )
    knowledge_bases = forms.MultipleChoiceField(
        required=False, help_text="none chosen: every knowledge base you see"
    )
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="empty: never expires"
    )

    def __init__(self, *args, choices: list[tuple[str, str]], **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        field = self.fields["knowledge_bases"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = choices
