"""Config files: the schema, loading with precise errors, and the typed config."""
