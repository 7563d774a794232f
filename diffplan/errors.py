"""One exception family for the library; the CLI maps it to `Error: ...` and an exit code."""

from __future__ import annotations


class DiffplanError(Exception):
    """Base class. The message says what is wrong and what to do about it.

    ``exit_code`` follows DESIGN section 8: 2 for bad input, 1 for a failed check.
    """

    exit_code: int = 2


class BadInputError(DiffplanError):
    """Bad user input: a value, an option or a combination of them."""


class DataFileError(DiffplanError):
    """A data-set file that is missing, unreadable, truncated or of an unknown layout."""


class ManifestError(DiffplanError):
    """A release manifest that does not parse or does not match the schema."""


class ModelNotFoundError(DiffplanError):
    """An unknown planner name or release model name."""


class CheckpointError(DiffplanError):
    """A release checkpoint that is missing, unsafe, corrupted or inconsistent."""


class TrainingError(DiffplanError):
    """Training that cannot start or had to stop (NaN loss, a run already in progress ...)."""


class CheckFailedError(DiffplanError):
    """A validation or release check that failed."""

    exit_code = 1
