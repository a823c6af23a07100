"""A job: its parameters (``params.py``, ``jobspec.py``), every state change with its folder
move (``lifecycle.py``), the canvases that run it (``canvas.py``: the Orchestrator) and a
batch's summary (``batches.py``)."""
