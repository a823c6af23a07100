"""Flower's configuration for this app, from the pipeline's settings (PIPELINE_FLOWER_*).

Flower executes this file (``--conf``; ``pipeline flower`` passes it, and the project's
top-level flowerconfig.py imports it so that ``celery -A orchestrator flower`` run from the
project folder finds it). Flower's own ``FLOWER_*`` variables are read before this file and
its command-line options after it, so both still work: ``FLOWER_AUTH_PROVIDER`` and the
``FLOWER_OAUTH2_*`` variables for OAuth, for instance.
"""

from orchestrator.monitoring.flower import options as _options

globals().update(_options())
