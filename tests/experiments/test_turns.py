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


def test_a_timed_call_waits_for_the_background_work_in_hand():
    log, inside, release = [], threading.Event(), threading.Event()

    def work():
        with turns.background():
            log.append("background starts")
            inside.set()
            release.wait(30)
            log.append("background ends")

    def timed():
        with turns.timed():
            log.append("timed call")

    w = _in_thread(work)
    assert inside.wait(10)
    t = _in_thread(timed)
    t.join(0.3)
    assert t.is_alive()  # still waiting
    release.set()
    for thread in (w, t):
        thread.join(10)
    assert log == ["background starts", "background ends", "timed call"]


def test_a_waiting_timed_call_goes_before_the_next_piece_of_a_backlog():
    """Each piece of background work delays a timed call at most once: pieces queued behind it wait."""
    log, inside, release = [], threading.Event(), threading.Event()

    def backlog():
        with turns.background():
            log.append("piece 1")
            inside.set()
            release.wait(30)
        with turns.background():  # at once, from the same thread
            log.append("piece 2")

    def timed():
        with turns.timed():
            log.append("timed call")

    w = _in_thread(backlog)
    assert inside.wait(10)
    t = _in_thread(timed)
    t.join(0.3)
    assert t.is_alive()
    release.set()
    for thread in (w, t):
        thread.join(10)
    assert log == ["piece 1", "timed call", "piece 2"]


def test_background_work_starts_only_after_the_timed_call_in_hand():
    log, inside, release = [], threading.Event(), threading.Event()

    def timed():
        with turns.timed():
            log.append("timed starts")
            inside.set()
            release.wait(30)
            log.append("timed ends")

    def work():
        with turns.background():
            log.append("background")

    t = _in_thread(timed)
    assert inside.wait(10)
    w = _in_thread(work)
    w.join(0.3)
    assert w.is_alive()
    release.set()
    for thread in (t, w):
        thread.join(10)
    assert log == ["timed starts", "timed ends", "background"]


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
