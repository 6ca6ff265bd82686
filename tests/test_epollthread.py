"""pxetwist.epollthread.EpollThread on its own: calls and ready descriptors are served on
its thread, in order; a handler or call that raises is logged and the thread
goes on; and the thread ends, closing its descriptors, once nothing is left to serve."""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
import time
from typing import Any

from twisted.logger import LogLevel, globalLogPublisher

from pxetwist.epollthread import EpollThread


def _descriptors() -> set[str]:
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.add(f"{fd} {os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:
            continue
    return names


def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_calls_run_on_the_thread_in_order_then_the_thread_ends() -> None:
    before = _descriptors()
    loop = EpollThread("test loop")
    seen: queue.Queue[tuple[int, str]] = queue.Queue()
    for i in range(50):
        loop.call(lambda i=i: seen.put((i, threading.current_thread().name)))
    got = [seen.get(timeout=5) for _ in range(50)]
    assert got == [(i, "test loop") for i in range(50)]
    loop.join(5)
    assert not loop.running
    assert _descriptors() == before  # its epoll set and eventfd are closed


def test_a_ready_descriptor_is_served_until_unregistered() -> None:
    loop = EpollThread("test descriptors")
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    received: queue.Queue[bytes] = queue.Queue()

    def readable(events: int) -> None:
        assert events & select.EPOLLIN
        data = ours.recv(100)
        received.put(data)
        if data == b"last":
            loop.unregister(ours.fileno())

    with ours, theirs:
        loop.call(loop.register, ours.fileno(), select.EPOLLIN, readable)
        for message in (b"one", b"two", b"last"):
            theirs.send(message)
            assert received.get(timeout=5) == message
        loop.join(5)
        assert not loop.running  # nothing registered, no call


def test_a_failure_is_logged_and_the_thread_goes_on() -> None:
    errors: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.critical:
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        loop = EpollThread("test failures")
        done = threading.Event()
        loop.call(lambda: 1 / 0)
        loop.call(done.set)
        assert done.wait(5)
        _until(lambda: errors)
        assert isinstance(errors[0]["log_failure"].value, ZeroDivisionError)
        assert errors[0]["thread"] == "test failures"
        loop.join(5)
    finally:
        globalLogPublisher.removeObserver(observer)


def test_a_call_after_the_thread_ended_starts_it_again() -> None:
    loop = EpollThread("test restart")
    for _ in range(3):
        done = threading.Event()
        loop.call(done.set)
        assert done.wait(5)
        loop.join(5)
        assert not loop.running


def test_work_coming_one_piece_at_a_time_keeps_one_thread_until_it_lingered() -> None:
    """With ``linger``, calls a little apart run on the same thread (no start a call),
    and the thread still ends, its descriptors closed, once idle that long."""
    before = _descriptors()
    loop = EpollThread("test linger", linger=1.0)
    # the Thread objects, not their idents: a new thread often gets an ended one's ident
    threads: queue.Queue[threading.Thread] = queue.Queue()
    for _ in range(5):
        loop.call(lambda: threads.put(threading.current_thread()))
        time.sleep(0.05)
    served = [threads.get(timeout=5) for _ in range(5)]
    assert all(thread is served[0] for thread in served)
    assert loop.running
    loop.join(5)
    assert not loop.running
    assert _descriptors() == before
