"""From dropped or submitted files to recorded, published jobs.

- ``submission.py``: claim, record, publish (every door: the share, ``pipeline submit``, the
  HTTP API);
- ``watcher.py``: the share's watcher loop; ``watch/``: its parts (events or polling, the settle
  check, the atomic claim, a job file's CSV).
"""
