"""Languages: which one a document is written in (py3langid, its model in the package), and
how BM25 analyses text for a knowledge base's language (tantivy's Snowball stemmers)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

AUTO = "auto"
# ISO 639-1 code -> tantivy's stemmer. English keeps tantivy's built-in "en_stem" analyser
# (what every index was built with before languages existed).
STEMMERS = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "sv": "swedish",
    "da": "danish",
    "no": "norwegian",
    "fi": "finnish",
    "ru": "russian",
    "hu": "hungarian",
    "ro": "romanian",
    "tr": "turkish",
    "el": "greek",
    "ar": "arabic",
    "ta": "tamil",
}
# Chinese and Japanese put no spaces between words: BM25 indexes each of their characters
# as a term (words of other scripts in the same text stay words). A run of them read as
# one word would be a sentence long, and dropped as too long to index.
UNSPACED = {"zh": "Chinese", "ja": "Japanese"}
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_TOKEN = f"[{CJK}]|[^\\W{CJK}]+"
NO_STEMMING = "none"  # other languages (Korean, Hebrew, ...): words as they are
CHOICES = [AUTO, *STEMMERS, *UNSPACED, NO_STEMMING]
LanguageChoice = Literal[
    "auto", "en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "ru", "hu",
    "ro", "tr", "el", "ar", "ta", "zh", "ja", "none",
]  # fmt: skip
DEFAULT = "en"
# Text shorter than this says too little about its language.
MIN_DETECT_CHARS = 40
DETECT_CHARS = 20_000


def tokenizer_name(language: str) -> str:
    if language == "en":
        return "en_stem"
    if language in STEMMERS:
        return f"stem_{language}"
    if language in UNSPACED:
        return "cjk"
    return "default"


def analyzer(name: str) -> Any | None:
    """The analyser a tokenizer name stands for, when it is ours to register (None for
    tantivy's own: "en_stem", "default", "raw")."""
    import tantivy

    if name == "cjk":
        return (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(CJK_TOKEN))
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .build()
        )
    if not name.startswith("stem_") or name[5:] not in STEMMERS:
        return None
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer(STEMMERS[name[5:]]))
        .build()
    )


_identifier: Any = None
_lock = threading.Lock()


def detect(text: str) -> str:
    """The language of ``text`` as an ISO 639-1 code, '' when there is too little text."""
    global _identifier
    sample = text[:DETECT_CHARS]
    if sum(1 for c in sample if c.isalpha()) < MIN_DETECT_CHARS:
        return ""
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        code, _probability = _identifier.classify(sample)
    return str(code)


def majority(languages: Iterable[str]) -> str:
    """The language most documents are written in (English when none is known); one with
    no stemmer (and spaces between its words) means no stemming."""
    counts = Counter(code for code in languages if code)
    if not counts:
        return DEFAULT
    code = counts.most_common(1)[0][0]
    return code if code in STEMMERS or code in UNSPACED else NO_STEMMING
