"""Named exit codes of every ``pipeline`` command (also listed in ``--help`` and the README)."""

from __future__ import annotations

from enum import IntEnum

from orchestrator.errors import (
    ConfigError,
    DataError,
    IllegalTransition,
    JobNotFound,
    PipelineError,
    TransientError,
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
    INTERRUPTED = 130


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
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
}


def for_error(error: PipelineError) -> Exit:
    for kind, code in ((ConfigError, Exit.CONFIG), (JobNotFound, Exit.NOT_FOUND),
                       (DataError, Exit.BAD_INPUT), (TransientError, Exit.UNAVAILABLE),
                       (IllegalTransition, Exit.CONFLICT)):
        if isinstance(error, kind):
            return code
    return Exit.ERROR


def epilog() -> str:
    rows = "\n".join(f"  {int(code):>3}  {text}" for code, text in MEANING.items())
    return f"\b\nExit codes:\n{rows}"
