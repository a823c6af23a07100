"""The ``pipeline`` command: a thin layer over :mod:`orchestrator`."""
