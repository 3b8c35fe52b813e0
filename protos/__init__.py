"""protos package (see README: layout)."""
