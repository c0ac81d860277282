"""The errors a user can fix, one type per kind, so the CLI can give each its own exit code.

Every type is a :class:`UserError` and carries its own ``exit_code``: the CLI prints its message as one
line on stderr (never a traceback) and exits with that code (bad input 2, missing weights 3, not a run
directory 4, run directory busy 5, disk full 6; nothing to show yet 1). Messages say what is wrong,
where, and how to fix it. The codes of outcomes that are not errors live here too, so every exit code
is defined once.
"""

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # a sweep whose failed generations were recorded while the rest ran
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, at any stage: re-run the same command to resume


class UserError(Exception):
    """A problem the user can fix from the message alone (the base of every type here)."""

    exit_code = 2


class SpecError(UserError, ValueError):
    """A spec, override, flag or argument that cannot be used (exit 2), with what is allowed."""


class ModelUnavailable(UserError, RuntimeError):
    """The model's weights are not on this machine and cannot be downloaded now (exit 3)."""

    exit_code = 3


class RunDirMissing(UserError, FileNotFoundError):
    """A command that reads a run directory was given a path that is not one (exit 4)."""

    exit_code = 4


class RunLocked(UserError, RuntimeError):
    """Another process is writing this run directory (exit 5): wait, or write elsewhere with --out."""

    exit_code = 5


class DiskFull(UserError, OSError):
    """No space left where a run writes (exit 6). The message names the disk, the space left and, when known,
    the space the failed write needed; what was written before stays consistent, a re-run resumes."""

    exit_code = 6

    def __init__(self, path, needed_bytes: int | None = None):
        import errno
        import shutil
        from pathlib import Path

        where = Path(path)
        probe = where if where.exists() else next((p for p in where.parents if p.exists()), Path("/"))
        mount = probe.resolve()
        while not mount.is_mount() and mount != mount.parent:
            mount = mount.parent
        free = shutil.disk_usage(probe).free
        need = f"; this write needed about {needed_bytes / 2**20:,.1f} MiB" if needed_bytes else ""
        super().__init__(errno.ENOSPC, f"no space left on the disk mounted at {mount} (writing {path}): "
                                       f"{free / 2**20:,.1f} MiB free{need}. Free some space (or give --out on "
                                       f"another disk) and run the same command again: finished work is kept")
        self.path = path


class NoResults(UserError):
    """A run directory with no finished generation yet: nothing to show or export (exit 1, like a report with
    no point to show), with how to get results."""

    exit_code = 1


class SpecChanged(SpecError):
    """A spec that changes what an existing run directory was made with (exit 2): write it elsewhere with --out."""
