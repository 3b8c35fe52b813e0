"""deployments package (see README: layout)."""
