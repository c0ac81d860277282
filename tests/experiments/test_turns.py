"""Timed calls and background work (W&B) take turns; hung background work never stalls timing."""

from __future__ import annotations

import threading
import time

import pytest

from experiments import turns


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def _order(holder, holder_turn, other_turn, other_name: str) -> list[str]:
    """What ran in which order: `holder(log, inside, release)` holds its turn until released, then
    `other_name` runs in `other_turn`, started while the holder held its turn (and checked blocked)."""
    log, inside, release = [], threading.Event(), threading.Event()

    def other():
        with other_turn():
            log.append(other_name)

    h = _in_thread(lambda: holder(log, inside, release, holder_turn))
    assert inside.wait(10)
    o = _in_thread(other)
    o.join(0.3)
    assert o.is_alive()  # still waiting for its turn
    release.set()
    for thread in (h, o):
        thread.join(10)
    return log


def _hold(log, inside, release, turn):
    with turn():
        log.append("held")
        inside.set()
        release.wait(30)
        log.append("released")


def test_a_timed_call_waits_for_the_background_work_in_hand():
    assert _order(_hold, turns.background, turns.timed, "timed call") == ["held", "released", "timed call"]


def test_background_work_starts_only_after_the_timed_call_in_hand():
    assert _order(_hold, turns.timed, turns.background, "background") == ["held", "released", "background"]


def test_a_waiting_timed_call_goes_before_the_next_piece_of_a_backlog():
    """Each piece of background work delays a timed call at most once: pieces queued behind it wait."""

    def backlog(log, inside, release, turn):
        _hold(log, inside, release, turn)
        with turn():  # at once, from the same thread
            log.append("piece 2")

    assert _order(backlog, turns.background, turns.timed, "timed call") == ["held", "released", "timed call",
                                                                             "piece 2"]


def test_hung_background_work_delays_one_timed_call_at_most_wait_s(monkeypatch):
    inside, release = threading.Event(), threading.Event()

    def hung():
        with turns.background():
            inside.set()
            release.wait(60)  # W&B on a dead network

    def timed():
        with turns.timed():
            pass

    w = _in_thread(hung)
    try:
        assert inside.wait(10)
        monkeypatch.setattr(turns, "WAIT_S", 0.3)
        t0 = time.monotonic()
        first = _in_thread(timed)
        first.join(10)
        assert not first.is_alive() and time.monotonic() - t0 >= 0.3  # it waited, then gave up
        monkeypatch.setattr(turns, "WAIT_S", 60.0)
        second = _in_thread(timed)
        second.join(10)
        assert not second.is_alive()  # no second wait while background work hangs
    finally:
        release.set()
        w.join(10)
    assert turns._working == 0 and not turns._hung and turns._timed == 0 and turns._waiting == 0


@pytest.mark.parametrize("where", ["timed", "background"])
def test_an_error_inside_gives_the_turn_back(where):
    with pytest.raises(ZeroDivisionError):
        with getattr(turns, where)():
            1 / 0
    assert turns._timed == 0 and turns._working == 0 and turns._waiting == 0
