"""Storage engines of one generation: a LanceDB table (vectors) and a tantivy index (BM25).

Imports of lancedb/pyarrow/tantivy happen inside the modules here, which web processes
only load when they search or write."""
