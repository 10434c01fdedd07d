"""PostgreSQL's dialect of each ledger migration: same numbers and names as SQLite's."""
