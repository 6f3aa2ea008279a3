"""The wake-up event the live loop's signal handlers set (zeekndm.signalsafe).

`threading.Event.set()` from a signal handler deadlocks when the handler interrupts the main
thread inside the same event's `clear()` or `wait()` (both hold its lock for a moment):
`zeekndm run` then never stops. These tests interrupt exactly there.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from zeekndm import signalsafe
from zeekndm.signalsafe import SignalSafeEvent


def test_behaves_like_threading_event():
    ev = SignalSafeEvent()
    assert not ev.is_set()
    started = time.monotonic()
    assert ev.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert ev.wait(0) is False
    ev.set()
    ev.set()  # twice: still one flag, no error
    assert ev.is_set() and ev.wait(10) is True
    ev.clear()
    assert not ev.is_set() and ev.wait(0.01) is False
    ev.close()
    ev.set()  # after close: no error
    ev.clear()


def test_set_from_another_thread_wakes_a_waiter_at_once():
    ev = SignalSafeEvent()
    threading.Timer(0.05, ev.set).start()
    started = time.monotonic()
    assert ev.wait(30) is True
    assert time.monotonic() - started < 5


def test_a_set_racing_with_clear_is_not_lost():
    """set() between clear()'s flag reset and its drain: the flag stays set."""
    ev = SignalSafeEvent()
    ev.set()
    real_read = signalsafe.os.read
    calls = []

    def read_then_set(fd, n):
        if not calls:
            calls.append(fd)
            ev.set()  # arrives while clear() drains the pipe
        return real_read(fd, n)

    signalsafe.os.read = read_then_set
    try:
        ev.clear()
    finally:
        signalsafe.os.read = real_read
    assert calls and ev.is_set() and ev.wait(0) is True


def test_a_wake_up_undone_by_clear_does_not_make_wait_return_early():
    """set() raised the flag, clear() reset it and drained, then set() wrote its byte: the
    stale byte must not turn every later wait() into an immediate return (a busy loop)."""
    ev = SignalSafeEvent()
    signalsafe.os.write(ev._w, b"\0")  # the late byte of a set() that clear() undid
    for _ in range(2):
        started = time.monotonic()
        assert ev.wait(0.05) is False
        assert time.monotonic() - started >= 0.04


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
@pytest.mark.parametrize("where", ["clear", "wait"])
def test_a_handler_setting_it_inside_clear_or_wait_returns(where, monkeypatch):
    """The signal arrives while the main thread is inside the event's own clear()/wait();
    the handler's set() must return (threading.Event's would wait forever for its lock)
    and a wait under way must end at once."""
    ev = SignalSafeEvent()
    handled = []

    def handler(signum, frame):
        ev.set()
        handled.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        if where == "clear":
            real_read = signalsafe.os.read

            def read_with_signal(fd, n):
                if not handled:  # once: the handler runs before this returns
                    signal.raise_signal(signal.SIGUSR1)
                return real_read(fd, n)

            ev.set()
            monkeypatch.setattr(signalsafe.os, "read", read_with_signal)
            ev.clear()
            monkeypatch.undo()
            # the handler's set() came after the flag was reset: it stands
            assert handled and ev.is_set()
        else:
            real_select = select.select

            def select_with_signal(r, w, x, timeout=None):
                if not handled:
                    signal.raise_signal(signal.SIGUSR1)
                return real_select(r, w, x, timeout)

            monkeypatch.setattr(signalsafe.select, "select", select_with_signal)
            started = time.monotonic()
            assert ev.wait(30) is True
            assert time.monotonic() - started < 5
            assert handled
    finally:
        signal.signal(signal.SIGUSR1, previous)


STORM = textwrap.dedent(
    """
    import os, signal, sys, time
    from zeekndm.live.follow.follower import Follower
    from zeekndm.live.follow.scan import FollowTarget

    follower = Follower([FollowTarget(sys.argv[1], ("conn*.log",))], use_watchdog=False,
                        poll_interval=0.0005)
    signal.signal(signal.SIGUSR1, lambda s, f: follower.wake())
    me = os.getpid()
    if os.fork() == 0:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                os.kill(me, signal.SIGUSR1)
            except ProcessLookupError:
                break
        os._exit(0)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        follower.read(0.0005)  # clear() and wait() on the wake event, thousands of times
    os.wait()
    follower.close()
    print("done")
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_storm_of_wakeups_from_signal_handlers_never_hangs_the_follower(tmp_path):
    """The live loop's case: SIGTERM's handler calls `Follower.wake()` while the loop sits
    in `Follower.read()`. With threading.Event this hung within seconds about one run in
    three; it must always finish."""
    out = subprocess.run(
        [sys.executable, "-c", STORM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
