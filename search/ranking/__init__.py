"""Ranking in plain Python (no Django): what a search asks and answers, the filters both
stores apply, fusion of two rankings, the retrieval metrics, and snippets."""
