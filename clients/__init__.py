"""clients package (see README: layout)."""
