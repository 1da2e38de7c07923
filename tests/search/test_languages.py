"""Languages (issue 23, item 8): each document's language is detected when it is indexed,
BM25 stems for the knowledge base's language, `auto` picks the documents' majority
language at build time, and a change of language is a rebuild the plan shows."""

from __future__ import annotations

import pytest

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import Document, Generation
from knowledge_bases.services import (
    generation_promote,
    generation_rebuild_plan,
    generation_rebuild_start,
)
from ragstudio.core import languages
from tests.factories import make_kb, make_user, upload

FRENCH = (
    "Les chevaux sauvages galopaient dans la vallée pendant que les bergers surveillaient "
    "leurs troupeaux. Chaque matin, les éleveurs nourrissaient les chevaux avec du foin "
    "frais et de l'avoine récoltée pendant l'été."
).encode()
GERMAN = (
    "Die Kraniche ziehen jedes Jahr im Herbst über die Ostsee nach Süden. Tausende Vögel "
    "rasten auf den Feldern und sammeln Kräfte für den langen Flug."
).encode()


def test_detect_and_majority() -> None:
    assert languages.detect(FRENCH.decode()) == "fr"
    assert languages.detect(GERMAN.decode()) == "de"
    assert languages.detect("too short") == ""
    assert languages.majority(["fr", "fr", "de", ""]) == "fr"
    assert languages.majority(["", ""]) == "en"
    assert languages.majority(["ko", "ko", "fr"]) == "none"  # no stemmer for Korean
    assert languages.majority(["zh", "zh", "en"]) == "zh"  # each character a term


def _lexical(kb, query: str) -> list[str]:  # type: ignore[no-untyped-def]
    from search.ranking.results import SearchParams
    from search.services import knowledge_base_search

    outcome = knowledge_base_search(kb=kb, params=SearchParams(query=query, mode="lexical"))
    return [hit.citation.filename for hit in outcome.results]


@pytest.mark.django_db
def test_bm25_stems_for_the_knowledge_base_language(alice) -> None:  # type: ignore[no-untyped-def]
    french = make_kb(alice, "fr-kb", language="fr")
    english = make_kb(alice, "en-kb")
    for kb in (french, english):
        run_job_and_queue(upload(kb, [("chevaux.txt", FRENCH), ("kraniche.txt", GERMAN)]).job.pk)
    assert dict(
        Document.objects.filter(knowledge_base=french).values_list("original_filename", "language")
    ) == {"chevaux.txt": "fr", "kraniche.txt": "de"}
    # "cheval" and "chevaux" share the French stem only.
    assert set(_lexical(french, "cheval")) == {"chevaux.txt"}
    assert _lexical(english, "cheval") == []
    assert french.generations.get().language == "fr"


@pytest.mark.django_db(transaction=True)  # the rebuild's check runs once its job commits
def test_auto_picks_the_majority_language_at_a_rebuild_the_plan_shows() -> None:
    kb = make_kb(make_user("ada"), "auto-kb", language="auto")
    files = [
        ("a.txt", FRENCH),
        ("b.txt", FRENCH.replace(b"chevaux", b"juments")),
        ("c.txt", GERMAN),
    ]
    run_job_and_queue(upload(kb, files).job.pk)
    first = kb.generations.get()
    assert first.language == "en"  # nothing was detected yet when it was created
    kb.refresh_from_db()
    plan = generation_rebuild_plan(kb=kb)
    change = next(s for s in plan.settings if s.name == "language")
    assert (change.active, change.new, change.changed) == ("en", "fr", True)
    job = generation_rebuild_start(kb=kb, enqueue=False)
    run_job_and_queue(job.pk)
    generation_promote(kb=kb, number=2)  # not auto: a new language may change the rankings
    kb.refresh_from_db()
    active = Generation.objects.get(pk=kb.active_generation_id)
    assert (active.number, active.language, active.language_setting) == (2, "fr", "auto")
    assert kb.language == "auto"  # the setting stays: the next build chooses again
    assert set(_lexical(kb, "cheval")) == {"a.txt"}


CHINESE = (
    "香港天文台预测明天有大雨\uff0c市民外出时应带备雨具。郊野公园的行山径可能湿滑\uff0c登山人士请留意安全。"
).encode()
CHINESE_OTHER = (
    "上海的地铁网络是世界上最长的城市轨道交通系统之一\uff0c每天运送数百万乘客。".encode()
)


@pytest.mark.django_db
def test_chinese_text_is_searchable_by_its_characters(alice) -> None:  # type: ignore[no-untyped-def]
    """A run of Chinese characters was one BM25 "word" (dropped as too long, or matching
    only the whole run): a question in other words found nothing. With the knowledge base
    in Chinese each character is a term, and words of other scripts stay words."""
    kb = make_kb(alice, "zh-kb", language="zh")
    mixed = CHINESE + b" Hong Kong Observatory forecasts"
    run_job_and_queue(upload(kb, [("weather.txt", mixed), ("metro.txt", CHINESE_OTHER)]).job.pk)
    assert Document.objects.get(original_filename="weather.txt").language == "zh"
    assert _lexical(kb, "明天会下雨吗")[0] == "weather.txt"  # "will it rain tomorrow"
    assert _lexical(kb, "上海地铁乘客")[0] == "metro.txt"
    assert _lexical(kb, "observatory") == ["weather.txt"]
    assert kb.generations.get().language == "zh"
