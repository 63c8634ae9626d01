"""The run ledger: history, its SQLite and PostgreSQL dialects, and the run lock."""
