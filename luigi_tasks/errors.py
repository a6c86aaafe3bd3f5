"""Errors a user sees. Each message names the service, month, file or URL, and the cause."""


class PipelineError(Exception):
    """A failure with a message written for the person running the pipeline."""


class DataError(PipelineError):
    """The input is not what the catalogue expects: bad header, ragged row, bad parameter."""


class SourceError(PipelineError):
    """The source could not deliver the file: HTTP error, error page, truncated payload."""


class NotPublished(SourceError):
    """The source answered 404: the month does not exist (yet) at that URL."""


class RetryableSourceError(SourceError):
    """A transient failure (connection reset, 5xx, 429, short read) that a retry may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked to wait (Retry-After), if it said


class HistoryError(PipelineError):
    """The run history could not be written: a full or read-only disk, a path that cannot be a file."""
