"""Storage rotation: finished jobs past their retention are packed into archive storage.

One batch (``PIPELINE_ROTATION_BATCH_SIZE`` jobs finished on the same day) is one archive,
``<share>/archive/YYYY/MM/DD/rot-<run>-<seq>.tar.gz``, and goes all or nothing, in this order:

1. the journal (``rotation_batches``) records the archive's name: status ``writing``;
2. the archive is written under a temporary name, fsynced, read back and checked member by
   member against the sha256 of every source file, renamed into place, and its manifest
   written beside it;
3. in ONE transaction every job moves to ``archived`` (compare-and-set, with an event) with the
   archive's path and sha256, the journal says ``committed`` and the run's counters move;
4. the job folders are removed; the journal says ``done``.

A crash before 3 leaves the jobs as they were (the next run archives them again; the orphan
archive is deleted once its batch's time limit has passed); a crash between 3 and 4 leaves
folders whose rows say archived, which the next run removes after checking the archive's
sha256 again. So no row says archived without a verified archive, and no folder is removed
without one. Nothing here imports Celery except :mod:`orchestrator.rotation.dispatch`.
"""
