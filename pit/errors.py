"""The errors pit raises on bad input.

Every message names the input that was wrong and what to do about it, so a user
reading a failed Prefect task or a CLI error never has to open the source.
Asserts stay for internal invariants only.
"""

from __future__ import annotations


class PitError(Exception):
    """Base class: anything a user can fix by changing their input or setup."""


class ConfigError(PitError):
    """A config file, preset or `--set` override is invalid.

    Holds every problem at once, so a user fixes them in one pass.
    """

    def __init__(self, problems: list[str] | str, source: str = "config") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source}:\n{lines}")


class UnknownRecipeError(PitError):
    """A recipe slug that no shipped or user recipe defines."""

    def __init__(self, slug: str, known: list[str]) -> None:
        self.slug = slug
        self.known = sorted(known)
        super().__init__(
            f"unknown recipe {slug!r}; known recipes: {', '.join(self.known)}. "
            "Add your own as a YAML file and pass --recipes-dir, or pick one of these."
        )


class ModelNotFoundError(PitError):
    """A model id that is neither a local folder, an S3 URI nor a loadable Hub id."""


class DataError(PitError):
    """Input data (a dump, a data set, a training batch) that cannot be used as given."""


class StorageError(PitError):
    """The artifact store cannot be read or written (credentials, bucket, endpoint)."""


class CorruptOutputError(StorageError):
    """Files of a published output do not match its manifest; `problems` names each one.

    Not transient: trying again reads the same bytes. The fix is to publish
    the output again (or to let the step that makes it run again).
    """

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = list(problems)
        super().__init__(
            f"{where} does not match its MANIFEST.json: {'; '.join(self.problems)}. "
            "Publish it again (or delete it so the step that makes it runs again)."
        )


class TransientError(PitError):
    """A fault that may pass on its own (a dropped connection, a timeout, HTTP 5xx or 429)
    that was still there after pit's own retries.

    Unlike other `PitError`s it is worth trying again later, so Prefect's task
    retries take it up where pit's own stopped.
    """


class StorageUnavailableError(StorageError, TransientError):
    """The artifact store kept failing transiently (down, overloaded) past pit's own retries.

    A :class:`TransientError`, so Prefect's task retries try again later; a
    stage resumes from its newest checkpoint. `storage.max_attempts` (or
    PIT_STORAGE_MAX_ATTEMPTS) sets how many tries pit makes first.
    """


class UnsafeOutputError(PitError):
    """An output folder that publishing would replace although pit did not write it.

    Publishing swaps the whole folder, so a user's files there would be lost.
    """


class TrainingStopped(PitError):
    """A training stage stopped on request (SIGTERM, Ctrl-C, its launcher gone).

    Its message says after which step it stopped and which checkpoint holds
    that step. Not retried: whoever asked for the stop meant it; running the
    same command again resumes from that checkpoint.
    """


class ServiceError(PitError):
    """A local server `pit ui` runs (Prefect, MLflow) cannot start, or stopped on its own.

    The message names the port or option to change; the other server is
    stopped too, so nothing is left listening.
    """
