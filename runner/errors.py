"""The runner's errors.

RunnerError
├── ConfigError                 a setting is missing or wrong
├── ResourceNotOpenError        a resource was used before it was opened (`async with`)
├── StartupError                Redis or Postgres never answered during start-up
├── JobFailedError              a job awaited through its handle ended failed or cancelled
└── JobError                    raised by or around a job; decides retries
    ├── TransientError          worth retrying (timeouts, 429, 5xx, lost connections)
    │   └── RetryLaterError     not a failure (a busy shared limit): run again later, no try used
    └── PermanentError          retrying cannot help; fail at once
        ├── PayloadError        the job in Redis is not valid JSON of arq's job shape
        ├── UnknownJobError     the payload names a job nobody registered
        ├── JobArgumentsError   the arguments do not match the job's signature
        └── JobTimeoutError     the hard time limit stopped the job

SoftTimeLimitExceeded            the outcome of a job stopped at its soft limit (see JobContext.past_soft_limit)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "JobArgumentsError",
    "JobError",
    "JobFailedError",
    "JobTimeoutError",
    "PayloadError",
    "PermanentError",
    "ResourceNotOpenError",
    "RetryLaterError",
    "RunnerError",
    "SoftTimeLimitExceeded",
    "StartupError",
    "TransientError",
    "UnknownJobError",
]


class RunnerError(Exception):
    """A runner error."""


class ConfigError(RunnerError):
    """A setting is missing or has a wrong value."""


class ResourceNotOpenError(RunnerError):
    """A resource was used before it was opened (or after it was closed): open it with `async with`."""


class StartupError(RunnerError):
    """Redis or Postgres did not answer within STARTUP_RETRY_S."""


class JobFailedError(RunnerError):
    """The job awaited (`EnqueueResult.result()`) ended failed or cancelled; `status` and `error` say how."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        super().__init__(f"job {job_id!r} ended {status}: {error or 'no error recorded'}")
        self.job_id = job_id
        self.status = status
        self.error = error


class JobError(RunnerError):
    """An error raised by or around a job."""


class TransientError(JobError):
    """A failure that may pass: the job is retried with backoff.

    `retry_after_s` carries a server's Retry-After hint, which the retry policy honours.
    """

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").splitlines()[0])
        self.retry_after_s = retry_after_s


class RetryLaterError(TransientError):
    """Not a failure: a shared limit was busy. The job runs again later without using up a try."""


class PermanentError(JobError):
    """A failure that retrying cannot fix: the job fails at once."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or (self.__doc__ or "").splitlines()[0])


class PayloadError(PermanentError):
    """The job payload in Redis is not a JSON object of arq's job shape."""


class UnknownJobError(PermanentError):
    """The payload names a job that no registry entry has."""


class JobArgumentsError(PermanentError):
    """The job's arguments do not match its signature."""


class JobTimeoutError(PermanentError):
    """The job ran past its hard time limit and was stopped."""


class SoftTimeLimitExceeded(Exception):
    """The job was stopped at its soft time limit. Inside the job the limit arrives as a cancellation of
    its current await, with `ctx.past_soft_limit()` true; this is the error the job is then failed with."""
