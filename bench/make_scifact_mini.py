"""How the test fixture tests/data/scifact-mini was made (run by hand; the tests only read
its output, never ../shared):
24 SciFact train queries with their judged abstracts, plus for each query the abstracts
BM25 ranks highest that are not judged (hard distractors), as one JSON Lines corpus file
and an evaluation set in the product's import format. SciFact: CC BY-NC 2.0 (allenai).

    .venv/bin/python bench/make_scifact_mini.py ../shared/datasets/scifact
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "tests" / "data" / "scifact-mini"
QUERIES = 24
DISTRACTORS = 4


def main(source: Path) -> None:
    import tantivy

    lines = (source / "corpus.jsonl").read_text().splitlines()
    corpus = {str(r["_id"]): r for r in map(json.loads, lines)}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(source / "qrels.tsv") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            if int(s) > 0:
                qrels[q][d] = int(s)
    lines = (source / "queries.jsonl").read_text().splitlines()
    queries = {str(q["_id"]): q["text"] for q in map(json.loads, lines)}
    chosen = random.Random(7).sample(sorted(q for q in qrels if q in queries), QUERIES)
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("text", tokenizer_name="en_stem")
    index = tantivy.Index(builder.build())
    writer = index.writer()
    for doc_id, r in corpus.items():
        writer.add_document(tantivy.Document(id=doc_id, text=f"{r['title']} {r['text']}"))
    writer.commit()
    index.reload()
    searcher = index.searcher()
    keep: dict[str, None] = {}
    for q in chosen:
        keep.update(dict.fromkeys(qrels[q]))
        words = " ".join(w for w in queries[q].replace('"', " ").split() if w.isalnum())
        hits = searcher.search(index.parse_query(words, ["text"]), 20).hits
        found = [searcher.doc(a)["id"][0] for _, a in hits]
        keep.update(dict.fromkeys([d for d in found if d not in qrels[q]][:DISTRACTORS]))
    with open(HERE / "corpus.jsonl", "w") as out:
        for doc_id in keep:
            r = corpus[doc_id]
            out.write(json.dumps({"id": doc_id, "title": r["title"], "text": r["text"]}) + "\n")
    with open(HERE / "evalset.jsonl", "w") as out:
        for q in chosen:
            out.write(
                json.dumps(
                    {
                        "id": q,
                        "query": queries[q],
                        "relevant": [f"corpus.jsonl#{d}" for d in qrels[q]],
                    }
                )
                + "\n"
            )
    print(f"{len(keep)} abstracts, {len(chosen)} queries", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
