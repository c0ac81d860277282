"""Ctrl-C and SIGTERM: one handler and one stop event for every verb.

Outside a sweep's generation loop a signal interrupts at once (``KeyboardInterrupt``; the CLI then
exits 130). Inside :func:`graceful` (the loop that generates), the first Ctrl-C asks to stop after the
generation in flight (:func:`requested`); a second Ctrl-C, or SIGTERM, asks to stop now: :func:`check`,
called in every denoising step's callback and between the Ray executor's polls, then raises
``KeyboardInterrupt``; a further Ctrl-C interrupts wherever it lands (a pipeline without step callbacks).
A signal the process was started with ignored (``nohup``, a background job of a script) stays ignored
throughout, during start-up as while generating.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Event:
    installed: set = set()  # the signals our handler holds (not one ignored at start)
    interrupted = 0  # KeyboardInterrupts raised: clean-up under way, the next signal waits for it
    graceful = False  # inside the generation loop
    requested = False  # stop after the generation in flight
    aborted = False  # stop now
    note: Callable[[str], None] = staticmethod(lambda text: print(text, file=sys.stderr, flush=True))


_event = _Event()


def _handle(signum, frame) -> None:
    if _event.interrupted == 1:  # stopping already: let the clean-up finish (run files, W&B) unless asked again
        _event.interrupted += 1
        _event.note("stopping: cleaning up (once more to force)")
        return
    if not _event.graceful or _event.aborted:
        _event.interrupted += 1
        raise KeyboardInterrupt
    if _event.requested or signum == signal.SIGTERM:
        _event.requested = _event.aborted = True
        _event.note("stopping now: the generation in flight is dropped at its next step")
        return
    _event.requested = True
    _event.note("stopping after the current generation (Ctrl-C again to stop now)")


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """The handler installed for SIGINT and SIGTERM (not for a signal ignored at start; main thread only)."""
    previous = {}
    _event.interrupted = 0
    with contextlib.suppress(ValueError):  # not the main thread: signals are the main thread's to handle
        for s in _SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, _handle)
    outer = set(_event.installed)
    _event.installed |= set(previous)
    try:
        yield
    finally:
        _event.installed = outer
        if not _event.interrupted:  # after an interrupt ours stays: a second signal must not cut the exit short
            for s, h in previous.items():
                signal.signal(s, h)


@contextlib.contextmanager
def graceful(note: Callable[[str], None]) -> Iterator[None]:
    """Around the generation loop: a first Ctrl-C stops after the generation in flight (see the module doc)."""
    _event.requested = _event.aborted = False
    _event.graceful, _event.note = True, note
    try:
        with handled():
            yield
    finally:
        _event.graceful = False


def requested() -> bool:
    """Whether a stop was asked for in the current generation loop."""
    return _event.requested


def check() -> None:
    """Raise KeyboardInterrupt when a stop *now* was asked for (a second Ctrl-C or SIGTERM)."""
    if _event.aborted:
        _event.interrupted = max(_event.interrupted, 1)
        raise KeyboardInterrupt


def reclaim() -> None:
    """Give SIGINT and SIGTERM back to our handler after a library took them over while ours was installed
    (``ray.init`` installs a SIGTERM handler of its own that aborts the driver)."""
    for s in _event.installed:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(s, _handle)


def exiting() -> None:
    """The process ends now (interrupted): further Ctrl-C or SIGTERM are ignored, also while Python finalizes
    (which would otherwise put the default handler back and die of the signal instead of exiting 130)."""
    for s in _event.installed | set(_SIGNALS):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(s, signal.SIG_IGN)
    _forget_caught_interrupt()


def _forget_caught_interrupt() -> None:
    """CPython marks a KeyboardInterrupt that passed through code run by exec() or eval() of a string as unhandled
    even when it was caught (dataclasses build their methods so, at import, where a start-up Ctrl-C often lands),
    and ``python -m repro.cli`` then ends by SIGINT (status -2) instead of exiting 130. Clear the mark where the
    interpreter exports it (3.10, 3.11); 3.12 and later keep it private, so there only the ``repro`` command (which
    CPython exits through another path) is sure to exit 130."""
    import ctypes

    with contextlib.suppress(ValueError, AttributeError):  # not exported by this interpreter
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
