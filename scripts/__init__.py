"""The repository's own tools, not part of the library (docs_reference: the reference
pages generated from the code)."""
