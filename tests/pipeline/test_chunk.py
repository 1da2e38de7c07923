from __future__ import annotations

import itertools

import pytest

from ingestion.pipeline.chunk import Chunker
from ragstudio.core.types import Section

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120)]


def test_chunks_respect_the_token_budget(embedder) -> None:
    chunker = Chunker(embedder.tokenizer, size=64, overlap=16)
    chunks = chunker.chunk(1, [Section(text=" ".join(SENTENCES))])
    assert len(chunks) > 5
    counted = embedder.tokenizer.count([c.text for c in chunks])
    assert max(counted) <= 64
    assert [c.token_count for c in chunks] == counted
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap_by_whole_sentences(embedder) -> None:
    chunks = Chunker(embedder.tokenizer, size=64, overlap=16).chunk(
        1, [Section(" ".join(SENTENCES))]
    )
    for previous, current in itertools.pairwise(chunks):
        last_sentence = previous.text.rsplit(". ", 1)[-1]
        assert current.text.startswith(last_sentence.rstrip("."))
    no_overlap = Chunker(embedder.tokenizer, size=64, overlap=0).chunk(
        1, [Section(" ".join(SENTENCES))]
    )
    assert sum(len(c.text) for c in no_overlap) < sum(len(c.text) for c in chunks)
    assert " ".join(c.text for c in no_overlap) == " ".join(SENTENCES)


def test_a_sentence_longer_than_a_chunk_is_cut_into_token_windows(embedder) -> None:
    long_sentence = " ".join(f"word{i}" for i in range(400))  # no sentence break at all
    chunks = Chunker(embedder.tokenizer, size=50, overlap=10).chunk(3, [Section(long_sentence)])
    assert len(chunks) > 5
    assert max(embedder.tokenizer.count([c.text for c in chunks])) <= 50
    assert chunks[0].text.startswith("word0") and chunks[-1].text.endswith("word399")


def test_chunk_ids_are_deterministic_and_depend_on_document_position_and_text(embedder) -> None:
    chunker = Chunker(embedder.tokenizer, size=64, overlap=16)
    text = [Section(" ".join(SENTENCES[:30]))]
    first = chunker.chunk(5, text)
    again = chunker.chunk(5, text)
    other_doc = chunker.chunk(6, text)
    changed = chunker.chunk(5, [Section(" ".join(SENTENCES[:29]) + " A different ending.")])
    assert [c.id for c in first] == [c.id for c in again]
    assert not {c.id for c in first} & {c.id for c in other_doc}
    assert first[-1].id != changed[-1].id and first[0].id == changed[0].id
    assert len({c.id for c in first}) == len(first)


def test_sections_keep_their_title_page_record_and_metadata(embedder) -> None:
    sections = [
        Section("Page one text.", page=1),
        Section("Record text.", title="Rec", record_id="r9", metadata={"k": "v"}),
    ]
    a, b = Chunker(embedder.tokenizer, size=64, overlap=0).chunk(2, sections, title="Doc")
    assert (a.page, a.title, a.record_id) == (1, "Doc", None)
    assert (b.title, b.record_id, b.metadata) == ("Rec", "r9", {"k": "v"})


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (64, 40), (64, -1)])
def test_invalid_settings_are_refused(embedder, size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        Chunker(embedder.tokenizer, size=size, overlap=overlap)


def test_a_word_of_any_length_cannot_make_a_chunk_longer_than_its_character_bound(
    embedder,
) -> None:
    """Issue 25, case 2: the tokenizer counts a word of any length as one token, so 45
    'words' of a million letters made one chunk of 45 MB."""
    from ingestion.pipeline.chunk import MAX_CHARS_PER_TOKEN

    chunker = Chunker(embedder.tokenizer, size=64, overlap=16)
    words = [letter * 20_000 for letter in "abcdefghij"]
    text = "Intro sentence here. " + " ".join(words) + " A closing sentence."
    chunks = chunker.chunk(1, [Section(text=text)])
    bound = 64 * MAX_CHARS_PER_TOKEN
    assert max(len(c.text) for c in chunks) <= bound
    covered = "".join(c.text for c in chunks)
    for word in words:  # nothing is lost: every letter of every word is in some chunk
        assert covered.count(word[0]) >= len(word)
    assert chunks[0].text.startswith("Intro sentence here.")
    assert chunks[-1].text.endswith("A closing sentence.")
    # Ordinary prose is chunked as before: no chunk reaches the character bound.
    prose = chunker.chunk(2, [Section(text=" ".join(SENTENCES))])
    assert max(len(c.text) for c in prose) < bound / 2
