"""The Celery tasks: thin wrappers that unpack a message, call a step, record the outcome."""
