"""The reconciler: it compares what the records say with what is there, and mends the gap
through the lifecycle (orchestrator/jobs/lifecycle.py), so that a crash at any point leaves no job
stuck and none run twice.

Two sweeps, one per place a crash can leave a gap (before, they were "repair" in the watcher
and "recovery" in beat: issue 15, item 1):

- :mod:`~orchestrator.reconciler.claims` — between claim and publish (the share against the
  job rows): claim markers without a row, jobs recorded but never published, refused inputs
  not yet set aside, ended jobs whose folder stayed in processing/. Run by the watcher at start
  and every minute (it needs the share).
- :mod:`~orchestrator.reconciler.runs` — between publish and the end (the rows against the
  broker): steps whose lease expired (their worker is gone) and queued jobs whose message is
  lost, each published again as a new run. Run by beat every PIPELINE_RECOVERY_INTERVAL.
"""
