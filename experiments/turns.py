"""Timed calls and this process's background bookkeeping (W&B logging) take turns.

A background thread never blocks generation for long, but on a few cores it competes for the
CPU and the GIL: measured on the demo (2 cores), the W&B thread's first round made one timed
generation 6x slower than the others; with W&B disabled the slowest was 1.6x the median. So a
timed call waits until the piece of background work in hand is done, and no new piece starts
while a timed call runs or waits: each gap between timed calls lets background work in.

Background work that hangs (a dead network) must not stall the sweep: a timed call waits at most
`WAIT_S` for a piece, and from then on timed calls do not wait for background work until some
piece finishes. Within one process only (Ray workers time in their own processes).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

WAIT_S = 10.0  # a W&B segment takes 0.2-1 s here, a few seconds on a loaded machine

_turn = threading.Condition()
_timed = 0  # timed calls running
_waiting = 0  # timed calls waiting for their turn: no new background piece starts meanwhile
_working = 0  # background pieces running
_hung = False  # a timed call stopped waiting for background work: none waits again until a piece ends


@contextlib.contextmanager
def timed() -> Iterator[None]:
    """Around a timed call: after the background piece in hand (at most `WAIT_S`)."""
    global _timed, _waiting, _hung
    entered = False
    try:
        with _turn:
            _waiting += 1
            try:
                if not _turn.wait_for(lambda: _hung or not _working, timeout=WAIT_S):
                    _hung = True
            finally:
                _waiting -= 1
            _timed += 1
            entered = True
        yield
    finally:
        if entered:
            with _turn:
                _timed -= 1
                _turn.notify_all()


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Around one piece of background work (a W&B segment): never during a timed call."""
    global _working, _hung
    entered = False
    try:
        with _turn:
            _turn.wait_for(lambda: _timed == 0 and _waiting == 0)
            _working += 1
            entered = True
        yield
    finally:
        if entered:
            with _turn:
                _working -= 1
                _hung = False
                _turn.notify_all()
