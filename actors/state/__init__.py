"""Durable state (docs/design.md §10): the store interface and its SQLite implementation,
the journal actor that commits the actors' writes in batches, the build codec,
and the pipeline's side of the journal (replies held until committed)."""
