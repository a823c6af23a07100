"""Pipeline Orchestrator: price files dropped on a share become optimized portfolios.

The Celery app lives in :mod:`orchestrator.celery` so that importing the domain code
(``orchestrator.steps``) never imports Celery; ``celery -A orchestrator`` finds it there.
"""

__version__ = "0.1.0"
