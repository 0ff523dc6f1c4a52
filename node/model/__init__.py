"""The model: records, vocabularies and rules with no I/O (every other layer uses them)."""
