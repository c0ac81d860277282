"""Timed calls and this process's background bookkeeping (W&B logging) take turns.

A background thread never blocks generation, but on a few cores it competes for the CPU and the
GIL: measured on the demo (2 cores), the W&B thread's first round made one timed generation 6x
slower than the others, with W&B disabled the slowest was 1.6x the median. So a timed call waits
until the background work in hand is done, and background work starts only between timed calls.

Background work that hangs (a dead network) must not stall the sweep: a timed call waits at most
`WAIT_S` for it, and no later timed call waits for that same piece of work again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

WAIT_S = 10.0  # a W&B segment takes 0.2-1 s here, a few seconds on a loaded machine

_turn = threading.Condition()
_timed = 0  # timed calls running
_working: set[int] = set()  # ids of background work running
_queued = 0  # background work waiting for its turn (it goes first at the next gap)
_given_up: set[int] = set()  # background work a timed call stopped waiting for
_next_id = 0


@contextlib.contextmanager
def timed() -> Iterator[None]:
    """Around a timed call: after the background work in hand (at most `WAIT_S` each)."""
    global _timed
    with _turn:
        if not _turn.wait_for(lambda: not (_working - _given_up) and not _queued, timeout=WAIT_S):
            _given_up.update(_working)  # hung: time without it from now on
        _timed += 1
    try:
        yield
    finally:
        with _turn:
            _timed -= 1
            _turn.notify_all()


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Around one piece of background work (a W&B segment): never inside a timed call."""
    global _queued, _next_id
    with _turn:
        _queued += 1
        try:
            _turn.wait_for(lambda: _timed == 0)
        finally:
            _queued -= 1
        _next_id += 1
        me = _next_id
        _working.add(me)
    try:
        yield
    finally:
        with _turn:
            _working.discard(me)
            _given_up.discard(me)
            _turn.notify_all()
