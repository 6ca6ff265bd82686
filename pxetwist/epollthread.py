"""A thread with an ``epoll`` loop of its own, for I/O that must not wait for the reactor.

In a boot storm the reactor's loop turn grows long (DHCP, TFTP, HTTP requests, boot
events), and work that moves the network on one small step at a time waited a whole turn
for each step: a whole-file HTTP body, each time the socket could take more
(:mod:`pxetwist.http.sendfile`). Such work runs here instead: the thread sleeps in
``epoll_wait`` on its own descriptors and a wake-up ``eventfd``, and acts as soon as one
is ready and it holds the interpreter (Python hands the GIL over within its switch
interval, 5 ms, while another thread computes). Other threads hand it work with
:meth:`EpollThread.call`, and it reports back through the reactor's ``callFromThread``.
The thread and its descriptors exist only while it has something to serve: a registered
descriptor or a pending call, and for ``linger`` seconds after its last work.
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any

from twisted.logger import Logger


class EpollThread:
    """Serves registered descriptors and calls on one thread of its own.

    :meth:`call` and :meth:`join` may be used from any thread; :meth:`register` and
    :meth:`unregister` only on this thread (from a call or a descriptor's handler).

    :param name: the thread's name (for debuggers and py-spy).
    :param linger: seconds the thread waits for more work once it has none before it
        ends: work that comes one piece at a time (a file a request, back to back)
        would otherwise start a thread for each (a quarter of the reactor's time for
        small files over keep-alive, bench/RESULTS.md, Boot storm).
    """

    _log = Logger()

    def __init__(self, name: str, linger: float = 0.0) -> None:
        self.name = name
        self.linger = linger
        #: guards the calls, and the thread's coming and going with its descriptors
        self._lock = threading.Lock()
        self._calls: deque[Callable[[], object]] = deque()
        self._thread: threading.Thread | None = None
        self._epoll: Any = None
        self._wake = -1
        self._handlers: dict[int, Callable[[int], object]] = {}

    @property
    def running(self) -> bool:
        """Whether the thread is up (it ends once it has nothing to serve)."""
        return self._thread is not None

    def call(self, function: Callable[..., object], *args: Any) -> None:
        """Run ``function(*args)`` on the thread, soon (starting the thread if need be)."""
        with self._lock:
            self._calls.append(partial(function, *args))
            if self._thread is None:
                self._epoll = select.epoll()
                self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self._epoll.register(self._wake, select.EPOLLIN)
                self._thread = threading.Thread(target=self._serve, name=self.name,
                                                daemon=True)
                self._thread.start()
            os.eventfd_write(self._wake, 1)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (once it has nothing left)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- on the thread ----------------------------------------------------------------

    def register(self, fd: int, events: int, handler: Callable[[int], object]) -> None:
        """Call ``handler(events)`` while ``fd`` is ready for ``events`` (level-triggered)."""
        self._epoll.register(fd, events)
        self._handlers[fd] = handler

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _serve(self) -> None:
        epoll, wake, handlers, calls = self._epoll, self._wake, self._handlers, self._calls
        timeout = -1.0
        while True:
            ready = epoll.poll(timeout)
            for fd, events in ready:
                if fd == wake:
                    with suppress(BlockingIOError):
                        os.eventfd_read(wake)
                    continue
                handler = handlers.get(fd)
                if handler is not None:  # unregistered by one handled earlier in this loop
                    self._guarded(partial(handler, events))
            while calls:
                self._guarded(calls.popleft())
            with self._lock:
                if handlers or calls:
                    timeout = -1.0
                elif ready and self.linger > 0:
                    timeout = self.linger  # idle now: wait that long for more
                else:
                    epoll.close()
                    os.close(wake)
                    self._epoll, self._wake = None, -1
                    self._thread = None  # last: join() then sees the descriptors closed
                    return

    def _guarded(self, function: Callable[[], object]) -> None:
        try:
            function()
        except Exception:
            self._log.failure("{thread}: {function!r} failed", thread=self.name,
                              function=function)
