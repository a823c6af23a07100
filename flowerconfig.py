"""Flower's configuration, found by ``celery -A orchestrator flower`` run from this folder.

The settings live in orchestrator/monitoring/flower.py (PIPELINE_FLOWER_* variables).
"""

from orchestrator.monitoring.flower import options as _options

globals().update(_options())
