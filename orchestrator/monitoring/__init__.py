"""Watching the pipeline: statistics, queue depths, health, notifications, heartbeats, the
Prometheus exporter and the Flower configuration. The CLI side is cli/monitor.py."""
