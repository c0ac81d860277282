"""The one exception type for bad user input (specs, flags, paths).

The CLI turns it into a single line on stderr and exit code 2, never a traceback.
"""


class SpecError(ValueError):
    """A spec, override or flag that cannot be used, with a message that says how to fix it."""
