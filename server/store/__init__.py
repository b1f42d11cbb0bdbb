"""The store: one protocol, an in-memory implementation for tests and the SQLite default."""
