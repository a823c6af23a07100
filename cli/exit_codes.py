"""Named exit codes of every ``pipeline`` command (listed in ``pipeline --help`` and the README)."""

from __future__ import annotations

from enum import IntEnum

from orchestrator.errors import (
    ConfigError,
    CorruptArchive,
    DataError,
    Forbidden,
    IllegalTransition,
    JobNotFound,
    PipelineError,
    StorageFull,
    StoragePermission,
    TransientError,
    Unauthorized,
)


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    NOT_FOUND = 4
    BAD_INPUT = 5
    UNAVAILABLE = 6
    JOB_FAILED = 7
    CONFLICT = 8
    UNAUTHORIZED = 9
    FORBIDDEN = 10
    STORAGE_FULL = 11
    PERMISSION = 12
    CORRUPT_ARCHIVE = 13
    ALREADY_RUNNING = 14
    INTERRUPTED = 130
    BROKEN_PIPE = 141


MEANING = {
    Exit.OK: "success (with --wait: every job completed)",
    Exit.ERROR: "unexpected error",
    Exit.USAGE: "bad command-line usage",
    Exit.CONFIG: "a PIPELINE_* setting has a bad value",
    Exit.NOT_FOUND: "no such job or file",
    Exit.BAD_INPUT: "the input or a parameter was refused",
    Exit.UNAVAILABLE: "broker or database unreachable",
    Exit.JOB_FAILED: "the job ended failed or cancelled",
    Exit.CONFLICT: "the job is not in a state that allows this",
    Exit.UNAUTHORIZED: "a token is required: none given, or unknown or revoked",
    Exit.FORBIDDEN: "the token's role does not allow this command",
    Exit.STORAGE_FULL: "archive storage is full; nothing was deleted",
    Exit.PERMISSION: "permission denied on a job folder or the archive storage",
    Exit.CORRUPT_ARCHIVE: "an archive failed verification; nothing was deleted",
    Exit.ALREADY_RUNNING: "`pipeline up` already runs on this machine (its var folder)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
    Exit.BROKEN_PIPE: "the reader of the output went away (e.g. `| head`), as a shell reports",
}


def for_error(error: PipelineError) -> Exit:
    for kind, code in ((ConfigError, Exit.CONFIG), (JobNotFound, Exit.NOT_FOUND),
                       (DataError, Exit.BAD_INPUT), (TransientError, Exit.UNAVAILABLE),
                       (IllegalTransition, Exit.CONFLICT), (Unauthorized, Exit.UNAUTHORIZED),
                       (Forbidden, Exit.FORBIDDEN), (StorageFull, Exit.STORAGE_FULL),
                       (StoragePermission, Exit.PERMISSION),
                       (CorruptArchive, Exit.CORRUPT_ARCHIVE)):
        if isinstance(error, kind):
            return code
    return Exit.ERROR


def exit_code_table() -> str:
    """The whole table, shown once: at the end of ``pipeline --help``."""
    rows = "\n".join(f"  {int(code):>3}  {text}" for code, text in MEANING.items())
    return f"\b\nExit codes:\n{rows}"


def epilog() -> str:
    """What every subcommand's ``--help`` ends with: where the table is, not the table."""
    return "Exit codes: see `pipeline --help`."
