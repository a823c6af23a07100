"""One error base class; retryable errors apart from data errors that must not retry."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""

    retryable = False

    def to_dict(self) -> dict[str, str]:
        return {"type": type(self).__name__, "message": str(self)}


class DataError(PipelineError):
    """The input cannot serve: bad file, bad parameters. Never retried."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        self.file, self.row, self.column = file, row, column
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column!r}" if column is not None else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        out.update({k: v for k, v in (("file", self.file), ("row", self.row),
                                      ("column", self.column)) if v is not None})
        return out


class ParameterError(DataError):
    """A job parameter is out of range or inconsistent with the others."""


class SolverError(DataError):
    """The solver did not reach an optimal, finite answer for this data."""


class TransientError(PipelineError):
    """A passing fault (broker, database, I/O). Retried with backoff."""

    retryable = True


class IllegalTransition(PipelineError):
    """A job state change that the state machine or a concurrent writer refused."""


class JobNotFound(PipelineError):
    """No job with that id."""


class ConfigError(PipelineError):
    """A setting has a bad value."""


class Unauthorized(PipelineError):
    """No token, or one that is unknown or revoked, where a token is required."""


class Forbidden(PipelineError):
    """A valid token whose role is below what the command needs."""


class StorageFull(PipelineError):
    """Archive storage has no space left (ENOSPC, EDQUOT): stop writing, delete nothing."""


class StoragePermission(PipelineError):
    """A job folder cannot be read, or the archive storage cannot be written (EACCES, EPERM)."""


class CorruptArchive(PipelineError):
    """An archive does not read back as written (checksum, size or member mismatch)."""
