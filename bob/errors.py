"""The error types bob raises on purpose, and the exit code each maps to.

Everything a user can get wrong (a name, an argument, a file on disk) raises a subclass of
`BobError` with a message written for that user: what went wrong, where, and what to do. The CLI
prints the message without a traceback (unless --debug) and exits with `exit_code`:
0 ok, 1 a run failed, 2 bad usage or bad input found before any run started.
"""

from __future__ import annotations


class BobError(Exception):
    """Base class of the errors whose message is meant for the user."""

    exit_code = 1


class UsageError(BobError):
    """Bad input noticed before any run starts: unknown names, malformed arguments, unreadable files."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A backbone, task, dataset or argument name that does not exist; the message lists close matches."""

    def __init__(self, kind: str, name: str, suggestions: list[str], hint: str = "") -> None:
        self.kind, self.name, self.suggestions = kind, name, suggestions
        message = f"Unknown {kind} '{name}'."
        if suggestions:
            message += " Did you mean: " + ", ".join(suggestions) + "?"
        if hint:
            message += " " + hint
        super().__init__(message)


class WeightsError(BobError):
    """Weights that cannot be found, downloaded or verified. Never answered by a silent random init."""


class DatasetNotFoundError(BobError):
    """A real dataset that is not on disk where bob looked."""


class CacheCorruptError(BobError):
    """A feature-cache entry whose files do not match their recorded checksums."""


class StorageError(BobError):
    """A write that the file system refused at run time (disk full, read-only, permission denied).

    The message is one line naming the path and the cause; the writer removed its partial file, so
    nothing is left half-written. Exit code 1: it happens while runs are under way (problems found
    before any run are UsageErrors from `bob.preflight`)."""


class ResultFileError(UsageError):
    """A result JSON in the results dir that cannot be read; bob leaves it untouched."""


class BackboneContractError(BobError):
    """A backbone whose outputs break the contract (shape, rank, finiteness)."""


class TrainingDivergedError(BobError):
    """A head whose loss became NaN or infinite."""


class TaskNotApplicable(BobError):
    """The task cannot run on this backbone by design (e.g. zero-shot needs a text tower).

    Raised by a task before any heavy work; the runner records a `skipped` result with the message as
    its reason, which is done (never retried), exits 0 and stays off the leaderboard.
    """

    exit_code = 0
