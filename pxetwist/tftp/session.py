"""One TFTP read transfer: its own ``DatagramProtocol`` on its own ephemeral port (its TID).

The transfer itself (window, ACKs, retransmission, giving up) is the I/O-free state machine
:class:`pxetwist.tftp.core.Transfer`. :class:`TftpSession` is its adapter: it feeds the
core the datagrams that arrive and its one timer, with the reactor's time, writes what the
core returns to the socket, re-arms the timer for the core's deadline, and reports the
result to the listener once the core has ended.

A client that answers within :data:`SPIN_WAIT` (loopback, a quiet LAN) would
spend most of each round trip waiting for this process to wake from
``epoll_wait``: when the session is the only one running (``may_spin``), it
keeps reading its own socket after a send for up to :data:`SPIN_WAIT` per
packet, and at most :data:`SPIN_TURN` before it hands the reactor back, so
DHCP and HTTP wait at most that long. A boot storm never spins.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.metrics import TFTP_DROPPED, TFTP_RETRANSMITS
from pxetwist.tftp import packet
from pxetwist.tftp.core import MAX_RTO, MIN_RTO, Result, Transfer
from pxetwist.tftp.files import Source

#: Spin only for a client whose smoothed RTT is below this, and wait this long per packet.
SPIN_WAIT = 0.0002
#: Longest stretch spent spinning before the reactor gets control back.
SPIN_TURN = 0.002
#: Largest datagram read while spinning (a client sends ACKs and ERRORs).
SPIN_READ_SIZE = 8192

__all__ = ["MAX_RTO", "MIN_RTO", "SPIN_WAIT", "StrangerProtocol", "TftpSession", "log_packet"]

Address = tuple[str, int]

_NO_TIMER = float("inf")


def log_packet(log: Logger, arrow: str, peer: Address, data: bytes) -> None:
    """A debug line for one request, OACK or ERROR in (``<-``) or out (``->``), decoded only
    if the line is written (``--verbose``). DATA and ACK blocks are never logged one by one:
    a transfer has a debug line when it starts and an info line when it ends."""
    log.debug("TFTP {arrow} {peer[0]}:{peer[1]} {summary()}", arrow=arrow, peer=peer,
              summary=partial(packet.describe_datagram, data))


def _raw_sender(sock: socket.socket) -> Callable[[bytes, Address], None]:
    """Send on the session's socket directly.

    ``udp.Port.write`` checks the address is an IP literal on every call; a session only
    ever sends to the one client address it was created with, already checked, and this
    is the per-packet hot path (about a fifth of the server's time in a boot storm). On a
    socket connected to the client (see :mod:`pxetwist.tftp.ports`) the address is left
    out. A send the kernel refuses (buffer full, ICMP unreachable) is treated as a lost
    packet: retransmission covers it.
    """
    try:
        sock.getpeername()
    except OSError:
        sendto = sock.sendto

        def send(data: bytes, addr: Address) -> None:
            try:
                sendto(data, addr)
            except OSError:
                TFTP_DROPPED.labels(reason="send-failed").inc()

        return send
    send_connected = sock.send

    def send_to_peer(data: bytes, addr: Address) -> None:
        try:
            send_connected(data)
        except OSError:
            TFTP_DROPPED.labels(reason="send-failed").inc()

    return send_to_peer


def _without_scope(recvfrom: Callable[[int], tuple[bytes, Any]]
                   ) -> Callable[[int], tuple[bytes, Address]]:
    """``recvfrom`` of an IPv6 socket gives ``(host, port, flow, scope)``; the session
    compares ``(host, port)`` as Twisted hands it (IPv4 sockets are read unwrapped)."""

    def receive(size: int) -> tuple[bytes, Address]:
        data, addr = recvfrom(size)
        return data, (addr[0], addr[1])

    return receive


class TftpSession(DatagramProtocol):
    """Sends one file to one client: the adapter between a :class:`Transfer` and a socket.

    :param source: what to send (closed when the session ends).
    :param client: the client's (host, port): its TID.
    :param blksize: negotiated block size.
    :param windowsize: negotiated window (blocks per ACK).
    :param oack: options to acknowledge first (empty: start with DATA 1).
    :param clock: ``seconds`` and ``callLater``.
    :param on_done: called once with ``(session, result)``; result is a
        :class:`~pxetwist.tftp.core.Result` (a ``str``): ``complete``, ``aborted``,
        ``client-error``, ``timeout``, ``unanswered``, ``stalled``, ``superseded`` or
        ``evicted`` (by the listener), or ``cancelled`` (shutdown).
    :param max_rto: upper bound of the retransmission timeout (client's ``timeout``).
    :param stall_timeout: seconds without progress before giving up.
    :param may_spin: whether the session may spin on its socket now (the listener says
        yes only while it is the one session running).
    """

    noisy = False
    _log = Logger()

    def __init__(
        self,
        source: Source,
        client: Address,
        blksize: int,
        windowsize: int,
        oack: dict[str, str],
        clock: Any,
        on_done: Callable[[TftpSession, str], object],
        max_rto: float = MAX_RTO,
        stall_timeout: float = 120.0,
        may_spin: Callable[[], bool] = lambda: False,
    ) -> None:
        self.source = source
        self.client = client
        self.blksize = blksize
        self.windowsize = windowsize
        self._clock = clock
        self._on_done = on_done
        #: whether the session may spin on its socket now (asked after each datagram)
        self.may_spin = may_spin
        self.started = clock.seconds()
        #: the transfer's state machine
        self.core = Transfer(source, blksize, windowsize, oack, max_rto, stall_timeout,
                             self.started)
        #: the file name and mode as the client asked (set by the listener)
        self.request_name = ""
        self.request_mode = ""
        #: the unconnected port beside a connected one, answering strangers (ports.py)
        self.sibling: Any = None
        self._timer: Any = None
        #: when the timer goes off (infinity: no timer)
        self._timer_at = _NO_TIMER
        self._reported = False
        self._send: Callable[[bytes, Address], None] = self._not_started
        self._recvfrom: Callable[[int], tuple[bytes, Address]] | None = None

    def _not_started(self, data: bytes, addr: Address) -> None:
        raise RuntimeError("session sends before its port is open")

    @property
    def result(self) -> Result | None:
        """How the transfer ended; None while it runs."""
        return self.core.result

    @property
    def answered(self) -> bool:
        """Whether the client has sent an ACK from its TID (its address is not spoofed)."""
        return self.core.answered

    @property
    def retransmits(self) -> int:
        """Packets or windows sent again."""
        return self.core.retransmits

    @property
    def bytes_acked(self) -> int:
        """Bytes the client has acknowledged so far."""
        return self.core.bytes_acked

    # -- Twisted callbacks -----------------------------------------------------------

    def startProtocol(self) -> None:
        assert self.transport is not None
        sock = getattr(self.transport, "socket", None)
        self._send = _raw_sender(sock) if sock is not None else self.transport.write
        self._recvfrom = sock.recvfrom if sock is not None else None
        if sock is not None and getattr(sock, "family", None) == socket.AF_INET6:
            self._recvfrom = _without_scope(sock.recvfrom)
        now = self._clock.seconds()
        self._output(self.core.start(now), now)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        self._receive(data, addr)
        core = self.core
        srtt = core.srtt
        if (self._recvfrom is not None and core.result is None and srtt is not None
                and srtt < SPIN_WAIT and self.may_spin()):
            self._spin(self._recvfrom)

    def _spin(self, recvfrom: Callable[[int], tuple[bytes, Address]]) -> None:
        """Read the socket (non-blocking) instead of sleeping in the reactor, handling each
        datagram at once, until none comes for :data:`SPIN_WAIT` or :data:`SPIN_TURN` is
        used up. A read error (nothing to read, or an ICMP error) hands back at once."""
        core = self.core
        receive = self._receive
        now = time.perf_counter()
        turn_ends = now + SPIN_TURN
        wait_ends = now + SPIN_WAIT
        while core.result is None and now < turn_ends:
            try:
                data, addr = recvfrom(SPIN_READ_SIZE)
            except BlockingIOError:
                now = time.perf_counter()
                if now >= wait_ends:
                    return
                continue
            except OSError:
                return
            receive(data, addr)
            now = time.perf_counter()
            wait_ends = now + SPIN_WAIT

    def _receive(self, data: bytes, addr: Address) -> None:
        if self.core.result is not None:
            return
        if addr == self.client and len(data) == 4 and data[0] == 0 and data[1] == packet.ACK:
            self._ack((data[2] << 8) | data[3])  # the hot path: skip the general parser
            return
        assert self.transport is not None
        if addr != self.client:
            self.answer_stranger(self.transport, addr)
            return
        try:
            message = packet.parse(data)
        except packet.TftpPacketError:
            TFTP_DROPPED.labels(reason="malformed").inc()
            log_packet(self._log, "<-", addr, data)
            return
        if isinstance(message, packet.Ack):
            self._ack(message.block)
            return
        log_packet(self._log, "<-", addr, data)
        if isinstance(message, packet.Error):
            now = self._clock.seconds()
            self.core.error(now)
            self._output((), now)
        else:
            TFTP_DROPPED.labels(reason="unexpected").inc()

    def answer_stranger(self, transport: Any, addr: Address) -> None:
        """A datagram from another address than the client's: error 5, and go on."""
        TFTP_DROPPED.labels(reason="unknown-tid").inc()
        error = packet.encode_error(packet.ERR_UNKNOWN_TID, "unknown transfer ID")
        transport.write(error, addr)
        log_packet(self._log, "->", addr, error)

    def _ack(self, block16: int) -> None:
        now = self._clock.seconds()
        self._output(self.core.ack(block16, now), now)

    def _timeout(self) -> None:
        self._timer = None
        self._timer_at = _NO_TIMER
        core = self.core
        if core.result is not None:
            return
        now = self._clock.seconds()
        packets = core.timer_fired(now)
        if packets:
            TFTP_RETRANSMITS.inc()
        self._output(packets, now)

    # -- what the core says ----------------------------------------------------------

    def _output(self, packets: Sequence[bytes], now: float) -> None:
        """Send what the core returned (the client is waiting: first), have the next window
        built, then end or move the timer.

        The timer is not moved on every send (that is per-packet work): one that fires
        before the core's deadline waits out the rest. A deadline sooner than the timer
        (the first RTT sample replacing the initial 1 s) gets a new timer: the reactor's
        ``reset`` to sooner searches its whole heap, which a boot storm of timers makes
        slow."""
        core = self.core
        if packets:
            send = self._send
            client = self.client
            for datagram in packets:
                send(datagram, client)
            if core.awaiting_oack:
                log_packet(self._log, "->", client, packets[0])
            else:
                core.prepare()
        if core.result is not None:
            self._finish()
            return
        deadline = core.deadline
        if deadline < self._timer_at:
            timer = self._timer
            if timer is not None:
                timer.cancel()
            self._timer = self._clock.callLater(max(deadline - now, 0.0), self._timeout)
            self._timer_at = deadline

    # -- ending ----------------------------------------------------------------------

    def _finish(self) -> None:
        if self._reported:
            return
        self._reported = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = _NO_TIMER
        self.source.close()
        assert self.transport is not None
        self.transport.stopListening()
        if self.sibling is not None:
            self.sibling.stopListening()
            self.sibling = None
        result = self.core.result
        assert result is not None
        self._on_done(self, result)

    def resend_first(self) -> None:
        """The client asked again before answering: send the OACK or first DATA again
        (see :meth:`Transfer.retry`)."""
        now = self._clock.seconds()
        packets = self.core.retry(now)
        if packets:
            TFTP_RETRANSMITS.inc()
            self._output(packets, now)

    def is_duplicate(self) -> bool:
        """Whether the same request again from this client is a copy of the one that
        started this session (see :meth:`Transfer.is_duplicate`)."""
        return self.core.is_duplicate()

    def supersede(self) -> None:
        """The client started over from the same TID: end quietly (it ignores us now)."""
        self.end_quietly("superseded")

    def end_quietly(self, result: str) -> None:
        """End now without a word to the client (superseded, or evicted by the listener
        for a client that has proved its address)."""
        if self.core.end(Result(result)):
            self._finish()

    def abort(self, reason: str = "server shutting down") -> None:
        """End the transfer now, telling the client (used on shutdown)."""
        if self.core.result is None:
            assert self.transport is not None
            error = packet.encode_error(packet.ERR_UNDEFINED, reason)
            self.transport.write(error, self.client)
            log_packet(self._log, "->", self.client, error)
            self.core.end(Result.CANCELLED)
            self._finish()


class StrangerProtocol(DatagramProtocol):
    """Beside a session's connected socket, on the same port: whatever reaches it came from
    another address than the client's (the kernel gives the client's to the session)."""

    noisy = False

    def __init__(self, session: TftpSession) -> None:
        self.session = session

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        if self.session.result is None:
            self.session.answer_stranger(self.transport, addr)
