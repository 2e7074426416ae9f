"""Storing: the SQLite store, its migrations, stage claims shared by several drivers, and queries."""
