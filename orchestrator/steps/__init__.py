"""Domain code of the pipeline steps; imports no Celery."""
