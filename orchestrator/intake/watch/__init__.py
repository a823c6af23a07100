"""The share watcher's parts: how it learns of files (events, scans), when a file is complete
(settle), how it takes one (claim), and what it mends on start (repair). The loop that ties
them together is orchestrator/intake/watcher.py."""
