"""serve package (see README: layout)."""
