"""The Celery runtime around the steps: the embedded broker (``transport.py``) and result
backend (``results.py``), reading Redis queues (``redis_broker.py``), the step messages'
format (``messages.py``), logging (``logs.py``) and the one-beat lock (``beat_lock.py``)."""
