"""Whole files sent with ``sendfile(2)`` by a thread of their own: the kernel copies from
the page cache to the socket, and the reactor thread only starts and ends each body.

Twisted's ``static.File`` reads a file into Python and writes it to the transport, two
copies per byte on the one reactor thread. In a boot storm (bench/storm.py: 100 machines
fetching 56 MiB each) that was over half of the server's samples and held up every
DHCP and TFTP answer behind it; ``sendfile`` on the reactor thread still spent a third
of its samples in the system call (bench/RESULTS.md, "Boot storm"). Each chunk sent from
the reactor's thread pool then cost a trip through the reactor per socket-full (its
writability event, a queue put to the pool, a ``callFromThread`` back), so a 48 MiB
initrd waited for hundreds of loop turns. So a whole-file GET on a plain TCP connection
is now handed, once its headers are written, to one of :data:`SENDERS` sending threads
(:class:`~pxetwist.epollthread.EpollThread`), which calls ``sendfile`` whenever the
socket takes more (``EPOLLOUT``) until the body is sent, and tells the reactor once.
Ranges, HEAD and anything not on a plain TCP socket keep Twisted's producers.

How it fits Twisted's flow control without a second writer of the socket: the producer
is registered with the request as a push producer; the HTTP channel resumes it only when
the transport has written everything it held (``FileDescriptor.doWrite`` resumes a
paused producer once its buffer is empty). So the headers go first through the
transport, and the thread starts on the body only after that. The thread writes to a
duplicate of the socket's descriptor (and the file stays open) until it has reported
back, so a connection the reactor closes meanwhile can never have its descriptor number
reused under the thread; a connection lost meanwhile has the thread stop at once.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.web.static import StaticProducer

from pxetwist.epollthread import EpollThread

#: The most sent for one body before the thread's other bodies have their turn; the
#: socket's free space bounds it first in practice.
SENDFILE_CHUNK = 4 * 1024 * 1024
#: Threads sending bodies (a connection stays with one): the kernel's work for a
#: ``sendfile`` (and, on a local link, the receiver's TCP work it triggers) runs in the
#: calling thread, so two use both cores of a small server; more would only queue for
#: the GIL.
SENDERS = 2
#: seconds a sending thread waits for the next body before it ends (starting a thread
#: for each body cost more than the body itself for small files over keep-alive)
SENDER_LINGER = 2.0

_log = Logger()
#: each reactor's sending threads, taken in turn
_senders: weakref.WeakKeyDictionary[Any, Iterator[EpollThread]] = weakref.WeakKeyDictionary()


def can_sendfile(request: Any, file_object: Any) -> bool:
    """Whether ``request``'s whole body may go by ``sendfile``: a plain TCP socket (no
    TLS or other wrapping) and a real file."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    return (type(transport) is tcp.Server and hasattr(os, "sendfile")
            and hasattr(file_object, "fileno"))


def sender_for(reactor: Any) -> EpollThread:
    """The next of ``reactor``'s sending threads, in turn."""
    turn = _senders.get(reactor)
    if turn is None:
        turn = _senders[reactor] = itertools.cycle(
            [EpollThread(f"sendfile {i + 1}", SENDER_LINGER) for i in range(SENDERS)])
    return next(turn)


class _Body:
    """One body being sent, on its sending thread: ``sendfile`` while the socket takes
    more, waiting for ``EPOLLOUT`` when it is full, until all is sent, the file ends
    early, the socket fails or :meth:`cancel` is called; then ``report(sent, outcome)``
    once, from the thread (``outcome``: ``None`` when all was sent, ``"shrank"``, or the
    ``OSError``)."""

    def __init__(self, thread: EpollThread, socket_fd: int, file_fd: int, offset: int,
                 count: int, report: Callable[[int, object], object]) -> None:
        self._thread = thread
        self._socket_fd = socket_fd
        self._file_fd = file_fd
        self._offset = offset
        self._count = count
        self._sent = 0
        self._report: Callable[[int, object], object] | None = report
        self._waiting = False

    def pump(self, events: int = 0) -> None:
        """Send what the socket takes now, up to :data:`SENDFILE_CHUNK` (then the other
        bodies of the thread have their turn, and this one goes on at its next
        ``EPOLLOUT``)."""
        if self._report is None:
            return
        budget = SENDFILE_CHUNK
        while self._sent < self._count:
            if budget <= 0:
                self._wait()
                return
            try:
                step = os.sendfile(self._socket_fd, self._file_fd, self._offset + self._sent,
                                   min(self._count - self._sent, budget))
            except BlockingIOError:
                self._wait()
                return
            except OSError as e:
                self._end(e)
                return
            if step == 0:  # the file is shorter than the Content-Length we promised
                self._end("shrank")
                return
            self._sent += step
            budget -= step
        self._end(None)

    def _wait(self) -> None:
        """Be pumped again when the socket can take more."""
        if not self._waiting:
            self._waiting = True
            self._thread.register(self._socket_fd, select.EPOLLOUT, self.pump)

    def cancel(self) -> None:
        """The connection is gone: have the thread stop (from any thread)."""
        self._thread.call(self._cancelled)

    def _cancelled(self) -> None:
        if self._report is not None:
            self._end("cancelled")

    def _end(self, outcome: object) -> None:
        if self._waiting:
            self._waiting = False
            self._thread.unregister(self._socket_fd)
        report, self._report = self._report, None
        assert report is not None
        report(self._sent, outcome)


class SendfileProducer(StaticProducer):
    """Writes all ``size`` bytes of ``file_object`` to ``request`` with ``sendfile``.

    :ivar offset: bytes of the file sent so far (known once the thread has reported).
    """

    def __init__(self, request: Any, file_object: Any, size: int) -> None:
        super().__init__(request, file_object)
        self.size = size
        self.offset = 0
        self._transport: Any = None
        self._socket_fd = -1
        self._body: _Body | None = None

    def start(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.write(b"")  # the status line and headers, through the transport
        self._transport = request.channel.transport
        self._socket_fd = os.dup(self._transport.getHandle().fileno())
        transport = self._transport
        if transport.connected and not transport.disconnecting:
            # resumed once the transport has sent the headers (see the module docstring)
            transport.producerPaused = True
            transport.startWriting()

    def pauseProducing(self) -> None:
        """Nothing to do: the thread sends only what the socket takes."""

    def resumeProducing(self) -> None:
        """The transport has sent the headers: the thread sends the body."""
        if self.request is None or self._body is not None:
            return
        if self.offset >= self.size:
            self._finish()
            return
        reactor = self._transport.reactor
        thread = sender_for(reactor)
        self._body = _Body(thread, self._socket_fd, self.fileObject.fileno(), self.offset,
                           self.size - self.offset,
                           lambda sent, outcome: reactor.callFromThread(self._sent, sent,
                                                                        outcome))
        thread.call(self._body.pump)

    def _sent(self, sent: int, outcome: object) -> None:
        """The thread is done with the body (on the reactor)."""
        self._body = None
        self.offset += sent
        if self.request is None:  # stopped while the thread was sending
            self._release()
            return
        self.request.sentLength += sent
        if outcome is None:
            self._finish()
        elif outcome == "shrank":
            _log.warn("file shrank while being sent ({sent} of {size} bytes)",
                      sent=self.offset, size=self.size)
            self._abort()
        else:
            if not (isinstance(outcome, OSError)
                    and outcome.errno in (errno.EPIPE, errno.ECONNRESET)):
                _log.error("sendfile failed: {error}", error=outcome)
            self._abort()

    def _finish(self) -> None:
        request = self.request
        request.unregisterProducer()
        request.finish()
        self.stopProducing()

    def _abort(self) -> None:
        """Close the connection: the client cannot get a whole body any more."""
        transport = self._transport
        self.request.unregisterProducer()
        self.stopProducing()
        transport.abortConnection()

    def stopProducing(self) -> None:
        """Done or the client went: close the file and our descriptor of the socket,
        once the thread is done with them."""
        self.request = None
        if self._body is None:
            self._release()
        else:
            self._body.cancel()

    def _release(self) -> None:
        self.fileObject.close()
        if self._socket_fd >= 0:
            os.close(self._socket_fd)
            self._socket_fd = -1
