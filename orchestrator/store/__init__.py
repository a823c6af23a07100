"""The status store: jobs, batches and their append-only history, in SQL."""
