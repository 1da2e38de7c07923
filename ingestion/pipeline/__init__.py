"""The ingestion pipeline: parse -> chunk -> batch -> embed -> buffered sink.

Pure Python, no Django imports: the Django side (ingestion.services) feeds it documents,
an embedder and a store, and records what it reports.
"""
