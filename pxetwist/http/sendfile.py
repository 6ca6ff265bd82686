"""Whole files sent with ``sendfile(2)``: the kernel copies from the page cache to the
socket, the reactor thread only asks.

Twisted's ``static.File`` reads a file into Python and writes it to the transport, two
copies per byte on the one reactor thread. In a boot storm (bench/storm.py: 100 machines
fetching 56 MiB each) that was over half of the server's samples and held up every
DHCP and TFTP answer behind it (bench/RESULTS.md, "Boot storm"). A whole-file GET on a
plain TCP connection is sent here instead; ranges, HEAD and anything not on a plain TCP
socket keep Twisted's producers.

How it fits Twisted's flow control without a second reader of the socket: the producer
is registered with the request as a push producer; the HTTP channel resumes it only when
the transport has written everything it held (``FileDescriptor.doWrite`` resumes a
paused producer once its buffer is empty). So the headers go first through the
transport, and each time the socket is full the producer marks the transport's producer
paused and asks it to watch for writability: the next ``doWrite`` finds nothing of its
own to send and resumes us.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.web.static import StaticProducer

#: The most one ``sendfile`` call is asked to send; the socket's free space bounds it
#: first in practice, so one connection cannot hold the reactor for long.
SENDFILE_CHUNK = 256 * 1024

_log = Logger()


def can_sendfile(request: Any, file_object: Any) -> bool:
    """Whether ``request``'s whole body may go by ``sendfile``: a plain TCP socket (no
    TLS or other wrapping) and a real file."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    return (type(transport) is tcp.Server and hasattr(os, "sendfile")
            and hasattr(file_object, "fileno"))


class SendfileProducer(StaticProducer):
    """Writes all ``size`` bytes of ``file_object`` to ``request`` with ``sendfile``.

    :ivar offset: bytes of the file sent so far.
    """

    def __init__(self, request: Any, file_object: Any, size: int) -> None:
        super().__init__(request, file_object)
        self.size = size
        self.offset = 0
        self._transport: Any = None

    def start(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.write(b"")  # the status line and headers, through the transport
        self._transport = request.channel.transport
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
        """The transport's buffer is empty: send what the socket takes."""
        if self.request is None:
            return
        left = self.size - self.offset
        if left > 0:
            want = min(left, SENDFILE_CHUNK)
            try:
                sent = os.sendfile(self._transport.getHandle().fileno(),
                                   self.fileObject.fileno(), self.offset, want)
            except BlockingIOError:
                sent = -1
            except OSError as e:
                if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                    _log.warn("sendfile failed: {error}", error=e)
                self._abort()
                return
            if sent == 0:  # the file is shorter than the Content-Length we promised
                _log.warn("file shrank while being sent ({sent} of {size} bytes)",
                          sent=self.offset, size=self.size)
                self._abort()
                return
            if sent > 0:
                self.offset += sent
                self.request.sentLength += sent
            if self.offset < self.size:
                self._wait_until_written()
                return
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
