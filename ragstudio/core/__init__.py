"""The neutral core both apps build on, in plain Python (no Django): the application's
errors, numeric bounds, the search vocabulary, text formatting, and the types the engines
pass between them (sections, chunks, vectors, the embedder and store contracts)."""
