"""Whole files sent with ``sendfile(2)`` from a thread: the kernel copies from the page
cache to the socket, and the reactor thread only hands out the work.

Twisted's ``static.File`` reads a file into Python and writes it to the transport, two
copies per byte on the one reactor thread. In a boot storm (bench/storm.py: 100 machines
fetching 56 MiB each) that was over half of the server's samples and held up every
DHCP and TFTP answer behind it; ``sendfile`` on the reactor thread still spent a third
of its samples in the system call (bench/RESULTS.md, "Boot storm"). So a whole-file GET
on a plain TCP connection is sent here, each chunk by ``os.sendfile`` in the reactor's
thread pool (it releases the GIL); ranges, HEAD and anything not on a plain TCP socket
keep Twisted's producers.

How it fits Twisted's flow control without a second reader of the socket: the producer
is registered with the request as a push producer; the HTTP channel resumes it only when
the transport has written everything it held (``FileDescriptor.doWrite`` resumes a
paused producer once its buffer is empty). So the headers go first through the
transport, and each time the socket is full the producer marks the transport's producer
paused and asks it to watch for writability: the next ``doWrite`` finds nothing of its
own to send and resumes us. The thread writes to a duplicate of the socket's descriptor
(and the file stays open) until its call has returned, so a connection the reactor
closes meanwhile can never have its descriptor number reused under the thread.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import tcp
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.static import StaticProducer

#: The most one ``sendfile`` call is asked to send; the socket's free space bounds it
#: first in practice.
SENDFILE_CHUNK = 4 * 1024 * 1024

_log = Logger()


def can_sendfile(request: Any, file_object: Any) -> bool:
    """Whether ``request``'s whole body may go by ``sendfile``: a plain TCP socket (no
    TLS or other wrapping) and a real file."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    return (type(transport) is tcp.Server and hasattr(os, "sendfile")
            and hasattr(file_object, "fileno"))


def _send(socket_fd: int, file_fd: int, offset: int, count: int) -> int:
    """Up to ``count`` bytes (in a pool thread), calling ``sendfile`` again while the
    socket takes more: bytes sent, 0 at the file's end, -1 when the socket was full.

    One call per hop would leave a connection whose socket buffer is small (TCP sizes it
    by the connection's history) a few KiB per trip through the thread pool's queue,
    while the others move MiBs: in a 500-machine storm a few initrds took 90 s instead
    of 10."""
    sent = 0
    while sent < count:
        try:
            step = os.sendfile(socket_fd, file_fd, offset + sent, count - sent)
        except BlockingIOError:
            return sent or -1
        if step == 0:
            break
        sent += step
    return sent


class SendfileProducer(StaticProducer):
    """Writes all ``size`` bytes of ``file_object`` to ``request`` with ``sendfile``.

    :ivar offset: bytes of the file sent so far.
    """

    def __init__(self, request: Any, file_object: Any, size: int) -> None:
        super().__init__(request, file_object)
        self.size = size
        self.offset = 0
        self._transport: Any = None
        self._socket_fd = -1
        self._in_flight = False

    def start(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.write(b"")  # the status line and headers, through the transport
        self._transport = request.channel.transport
        self._socket_fd = os.dup(self._transport.getHandle().fileno())
        self._wait_until_written()

    def _wait_until_written(self) -> None:
        """Be resumed once the transport has sent all it holds and the socket can take
        more (see the module's docstring)."""
        transport = self._transport
        if transport.connected and not transport.disconnecting:
            transport.producerPaused = True
            transport.startWriting()

    def pauseProducing(self) -> None:
        """Nothing to do: we are resumed only when the transport is empty anyway."""

    def resumeProducing(self) -> None:
        """The transport's buffer is empty: send the next chunk from a thread."""
        if self.request is None or self._in_flight:
            return
        if self.offset >= self.size:
            self._finish()
            return
        want = min(self.size - self.offset, SENDFILE_CHUNK)
        self._in_flight = True
        reactor = self._transport.reactor
        d = deferToThreadPool(reactor, reactor.getThreadPool(), _send, self._socket_fd,
                              self.fileObject.fileno(), self.offset, want)
        d.addCallbacks(self._sent, self._failed, callbackArgs=(want,))

    def _sent(self, sent: int, want: int) -> None:
        self._in_flight = False
        if sent > 0:
            self.offset += sent
        if self.request is None:  # stopped while the thread was sending
            self._release()
            return
        if sent == 0:  # the file is shorter than the Content-Length we promised
            _log.warn("file shrank while being sent ({sent} of {size} bytes)",
                      sent=self.offset, size=self.size)
            self._abort()
            return
        if sent > 0:
            self.request.sentLength += sent
        if self.offset >= self.size:
            self._finish()
        elif sent == want:
            self.resumeProducing()  # the socket took it all: it may take more
        else:
            self._wait_until_written()

    def _failed(self, failure: Failure) -> None:
        self._in_flight = False
        if self.request is None:
            self._release()
            return
        error = failure.value
        if not (isinstance(error, OSError)
                and error.errno in (errno.EPIPE, errno.ECONNRESET)):
            _log.failure("sendfile failed", failure)
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
        once no thread is using them."""
        self.request = None
        if not self._in_flight:
            self._release()

    def _release(self) -> None:
        self.fileObject.close()
        if self._socket_fd >= 0:
            os.close(self._socket_fd)
            self._socket_fd = -1
