"""What went wrong in a batch, by kind: each kind has its own handling and exit code.

======================  =========================================  ==========================
kind                    handling                                   ``pipeline rotate`` exits
======================  =========================================  ==========================
``storage_full``        partial archive removed; the run stops     11 (STORAGE_FULL)
                        (later batches skip); nothing deleted
``permission``          batch rolled back; other batches go on     12 (PERMISSION)
``corrupt``             archive deleted; batch rolled back;        13 (CORRUPT_ARCHIVE)
                        other batches go on
``database``            the batch task retries with backoff, then  6 (UNAVAILABLE)
                        counts the batch failed
``io``                  another I/O error (a folder vanished):     1
                        batch rolled back, redone by the next run
``conflict``            a job changed state meanwhile: the batch   —
                        is redone once without it
``error``               recorded, re-raised (traceback in the log) 1
======================  =========================================  ==========================
"""

from __future__ import annotations

import errno

from orchestrator.errors import (
    CorruptArchive,
    PipelineError,
    StorageFull,
    StoragePermission,
    TransientError,
)

FULL = {errno.ENOSPC, errno.EDQUOT}
DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
KINDS = ("storage_full", "permission", "corrupt", "database", "io", "error")


def classify_os_error(error: OSError, where: str) -> PipelineError:
    """An OSError from reading a job folder or writing the archive, as one of our kinds."""
    reason = error.strerror or str(error)
    if error.errno in FULL:
        return StorageFull(f"archive storage full while writing {where}: {reason}")
    if error.errno in DENIED:
        return StoragePermission(f"permission denied: {error.filename or where}: {reason}")
    return TransientError(f"I/O error on {error.filename or where}: {reason}")


def kind_of(error: BaseException) -> str:
    from sqlalchemy.exc import DBAPIError

    for cls, kind in ((StorageFull, "storage_full"), (StoragePermission, "permission"),
                      (CorruptArchive, "corrupt"), (DBAPIError, "database"),
                      (TransientError, "io")):
        if isinstance(error, cls):
            return kind
    return "error"
