"""Dispatch: SQLite's owed conversations to the analysis — the feeder (claims and enqueues jobs for
workers), the payloads jobs carry, and `analyze --inline`'s runner (the same work in one process)."""
