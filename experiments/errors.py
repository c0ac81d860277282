"""The errors a user can fix, one type per kind, so the CLI can give each its own exit code.

Every type is a :class:`UserError`: the CLI prints its message as one line on stderr (never a
traceback) and exits with the code ``repro.cli.EXIT_CODES`` maps it to (bad input 2, missing weights
3, not a run directory 4, run directory busy 5). Messages say what is wrong, where, and how to fix it.
"""


class UserError(Exception):
    """A problem the user can fix from the message alone (the base of every type here)."""


class SpecError(UserError, ValueError):
    """A spec, override, flag or argument that cannot be used (exit 2), with what is allowed."""


class ModelUnavailable(UserError, RuntimeError):
    """The model's weights are not on this machine and cannot be downloaded now (exit 3)."""


class RunDirMissing(UserError, FileNotFoundError):
    """A command that reads a run directory was given a path that is not one (exit 4)."""


class RunLocked(UserError, RuntimeError):
    """Another process is writing this run directory (exit 5): wait, or write elsewhere with --out."""
