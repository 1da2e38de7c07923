"""Dify's External Knowledge API (issue 26, item 2), driven with the requests Dify's own
code sends: the registration probe with no body, a null top_k, a null or missing
metadata_condition, every comparison operator, and its error codes."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import ApiToken
from search.dify import OPERATORS, metadata_predicate
from search.ranking.fusion import unit_score
from search.ranking.predicates import PredicateError
from tests.factories import make_kb, make_user, upload

pytestmark = pytest.mark.django_db

RECORDS = [
    {"id": "r1", "title": "Tides", "text": "Spring tides follow the new and full moon.",
     "metadata": {"year": 2021, "topic": "ocean", "tags": ["moon", "sea"], "author": "Ada Lovelace",
                  "published": "2021-03-01"}},
    {"id": "r2", "title": "Currents", "text": "Ocean currents move heat from the tropics.",
     "metadata": {"year": 2019, "topic": "ocean", "tags": ["heat"], "author": "Grace Hopper",
                  "published": "2019-07-15"}},
    {"id": "r3", "title": "Volcanoes", "text": "Volcanoes vent heat from the mantle.",
     "metadata": {"year": 2023, "topic": "geology", "tags": ["heat", "rock"], "author": "",
                  "published": "2023-01-20"}},
]  # fmt: skip


@pytest.fixture
def dify(alice):  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "earth")
    data = "\n".join(json.dumps(r) for r in RECORDS).encode()
    run_job_and_queue(upload(kb, [("earth.jsonl", data)]).job.pk)
    _row, key = ApiToken.issue(user=alice, name="dify", scope="read")

    def post(body: object = None, *, token: str | None = key) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        client = Client(headers=headers)
        raw = b"" if body is None else json.dumps(body).encode()
        response = client.generic("POST", "/dify/retrieval", raw, content_type="application/json")
        return response.status_code, response.json()

    return post


def ask(query: str, **extra: object) -> dict:
    return {
        "knowledge_id": "earth",
        "query": query,
        "retrieval_setting": {"top_k": None, "score_threshold": 0.0},
        "metadata_condition": None,
        **extra,
    }


def test_registration_probe_and_errors_as_dify_expects(dify) -> None:  # type: ignore[no-untyped-def]
    assert dify(None)[0] == 400  # the probe: good key, no body (never 404)
    assert dify(None, token=None) == (
        403,
        {
            "error_code": 1001,
            "error_msg": "Invalid Authorization header format. Expected 'Bearer <api-key>'.",
        },
    )
    status, body = dify(ask("tides"), token="rs_not-a-key")
    assert (status, body["error_code"]) == (403, 1002)
    status, body = dify({**ask("tides"), "knowledge_id": "nope"})
    assert (status, body["error_code"]) == (404, 2001)
    assert dify({"knowledge_id": "earth"})[0] == 422  # no query
    assert dify(ask("tides", retrieval_setting={"top_k": 0}))[0] == 422
    assert Client().get("/dify/retrieval").status_code == 200  # health checks


def test_records_carry_content_score_title_and_string_document_id(dify) -> None:  # type: ignore[no-untyped-def]
    status, body = dify(ask("what moves heat from the tropics"))
    assert status == 200
    records = body["records"]
    assert 1 <= len(records) <= 5  # a null top_k is the default, 5
    top = records[0]
    assert "Ocean currents" in top["content"] and top["title"] == "Currents"
    assert 0 < top["score"] < 1
    meta = top["metadata"]
    assert isinstance(meta["document_id"], str) and meta["document_id"] == meta["doc_id"]
    assert meta["chunk_id"] and meta["path"] == "earth.jsonl" and meta["topic"] == "ocean"
    # Without metadata_condition at all (newer Dify) the same.
    missing = ask("what moves heat from the tropics")
    del missing["metadata_condition"]
    assert dify(missing)[1]["records"][0]["metadata"]["chunk_id"] == meta["chunk_id"]
    strict = dify(ask("heat", retrieval_setting={"top_k": 3, "score_threshold": 0.999}))[1]
    assert strict == {"records": []}


@pytest.mark.parametrize(
    ("conditions", "logical", "titles"),
    [
        (
            [{"name": "topic", "comparison_operator": "is", "value": "ocean"}],
            "and",
            {"Tides", "Currents"},
        ),
        (
            [{"name": "topic", "comparison_operator": "is not", "value": "ocean"}],
            "and",
            {"Volcanoes"},
        ),
        (
            [{"name": "year", "comparison_operator": "≥", "value": 2021}],
            "and",
            {"Tides", "Volcanoes"},
        ),
        ([{"name": "year", "comparison_operator": "<", "value": 2021}], "and", {"Currents"}),
        ([{"name": "year", "comparison_operator": "=", "value": 2023}], "and", {"Volcanoes"}),
        (
            [{"name": "year", "comparison_operator": "≠", "value": 2023}],
            "and",
            {"Tides", "Currents"},
        ),
        (
            [{"name": "author", "comparison_operator": "contains", "value": "hopper"}],
            "and",
            {"Currents"},
        ),
        (
            [{"name": "author", "comparison_operator": "not contains", "value": "a"}],
            "and",
            {"Volcanoes"},
        ),
        (
            [{"name": "author", "comparison_operator": "start with", "value": "Ada"}],
            "and",
            {"Tides"},
        ),
        (
            [{"name": "author", "comparison_operator": "end with", "value": "hopper"}],
            "and",
            {"Currents"},
        ),
        ([{"name": "author", "comparison_operator": "empty", "value": None}], "and", {"Volcanoes"}),
        (
            [{"name": "author", "comparison_operator": "not empty", "value": None}],
            "and",
            {"Tides", "Currents"},
        ),
        (
            [{"name": "topic", "comparison_operator": "in", "value": ["geology", "space"]}],
            "and",
            {"Volcanoes"},
        ),
        (
            [{"name": "topic", "comparison_operator": "not in", "value": "geology, space"}],
            "and",
            {"Tides", "Currents"},
        ),
        (
            [{"name": "published", "comparison_operator": "before", "value": "2020-01-01"}],
            "and",
            {"Currents"},
        ),
        (
            [{"name": "published", "comparison_operator": "after", "value": "2022-12-31"}],
            "and",
            {"Volcanoes"},
        ),
        (
            [{"name": "tags", "comparison_operator": "contains", "value": "rock"}],
            "and",
            {"Volcanoes"},
        ),
        (
            [
                {"name": "year", "comparison_operator": ">", "value": 2022},
                {"name": "tags", "comparison_operator": "contains", "value": "moon"},
            ],
            "or",
            {"Volcanoes", "Tides"},
        ),
    ],
)
def test_every_dify_operator_filters_the_records(dify, conditions, logical, titles) -> None:  # type: ignore[no-untyped-def]
    body = ask(
        "heat moon ocean tides volcanoes currents",
        retrieval_setting={"top_k": 10, "score_threshold": 0},
        metadata_condition={"logical_operator": logical, "conditions": conditions},
    )
    status, answer = dify(body)
    assert status == 200, answer
    assert {r["title"] for r in answer["records"]} == titles


def test_every_operator_is_mapped_and_bad_conditions_are_refused() -> None:
    assert set(OPERATORS) == {
        "contains", "not contains", "start with", "end with", "is", "is not", "empty",
        "not empty", "in", "not in", "=", "≠", ">", "<", "≥", "≤", "before", "after",
    }  # fmt: skip
    assert metadata_predicate(None) is None
    for bad in (
        {"conditions": [{"name": "a", "comparison_operator": "like", "value": 1}]},
        {"logical_operator": "xor", "conditions": [{"name": "a", "comparison_operator": "is"}]},
        {"conditions": "a=1"},
    ):
        with pytest.raises(PredicateError):
            metadata_predicate(bad)
    assert unit_score(-100) < 0.001 < unit_score(0) == 0.5 < unit_score(3) < 1


def test_a_key_for_another_kb_gets_not_found(dify) -> None:  # type: ignore[no-untyped-def]
    bob = make_user("bob")
    make_kb(bob, "other")
    _row, key = ApiToken.issue(user=bob, name="bob")
    status, body = dify(ask("tides"), token=key)
    assert (status, body["error_code"]) == (404, 2001)
