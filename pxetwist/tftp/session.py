"""One TFTP read transfer: its own ``DatagramProtocol`` on its own ephemeral port (its TID).

The session sends a window of DATA blocks (RFC 7440; 1 block = classic
lock-step) and waits for an ACK. An ACK for the last block of the window
moves on; a shorter ACK means the client lost something, so sending resumes
from the block after it; an ACK for a block already acknowledged is ignored
(no Sorcerer's Apprentice). Block numbers roll over past 65535 to 0.

Retransmission adapts to the link: the round trip is measured per window
(only on windows sent once, Karn's rule) and the retransmission timeout is a
few smoothed RTTs (RFC 6298 style), bounded below by :data:`MIN_RTO` and above
by the client's ``timeout`` option (or :data:`MAX_RTO`), doubling on each try.
After :data:`MAX_TRIES` tries without progress, or ``stall_timeout`` seconds
without progress, the session gives up and releases its port and file.

Until the client has answered once (any ACK from its TID), the OACK or first
DATA is resent on the timer at most :data:`PRE_ANSWER_RESENDS` times, and again
whenever the client repeats its request (:meth:`TftpSession.resend_first`,
called by the listener; RFC 1350 leaves retransmitting the request to the
requester). So a spoofed RRQ yields one packet sent at most three times, never
a stream. A session still unanswered after those resends gives up its slot
("unanswered"): ~7 s after the request, or a little longer when the client asked
for a longer ``timeout`` (its own retransmission must still find the session),
at most :data:`UNANSWERED_PATIENCE` after the last send.

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
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.metrics import TFTP_DROPPED, TFTP_RETRANSMITS
from pxetwist.tftp import packet
from pxetwist.tftp.files import Source

#: Floor of the retransmission timeout: ~2 RTTs of a 1 ms-each-way link. A spurious resend
#: to a slower client costs one duplicate DATA (its repeated ACK is ignored).
MIN_RTO = 0.005
MAX_RTO = 2.0
INITIAL_RTO = 1.0
MAX_TRIES = 8
#: Timer resends of the first packet (OACK or DATA 1) before the client has answered.
PRE_ANSWER_RESENDS = 2
#: Longest wait after the last send for a client that has never answered (a client that
#: asked a longer ``timeout`` gets that plus a second, up to this; curl asks ~6 s).
UNANSWERED_PATIENCE = 8.0
#: A repeated request sooner than this after our last send is a network copy, not a retry
#: (iPXE's shortest retry is 250 ms).
RETRY_GAP = 0.25
#: Bytes read ahead from disk per ``pread`` for files not held in memory.
READ_AHEAD = 256 * 1024
#: Spin only for a client whose smoothed RTT is below this, and wait this long per packet.
SPIN_WAIT = 0.0002
#: Longest stretch spent spinning before the reactor gets control back.
SPIN_TURN = 0.002
#: Largest datagram read while spinning (a client sends ACKs and ERRORs).
SPIN_READ_SIZE = 8192
#: A timer this close to its deadline counts as on time (float rounding of re-arming).
TIMER_SLACK = 1e-6
#: ``last_block`` while the size is not known yet (netascii): the first short block is.
_END_UNKNOWN = 1 << 62

Address = tuple[str, int]


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
    """Sends one file to one client.

    :param source: what to send (closed when the session ends).
    :param client: the client's (host, port): its TID.
    :param blksize: negotiated block size.
    :param windowsize: negotiated window (blocks per ACK).
    :param oack: options to acknowledge first (empty: start with DATA 1).
    :param clock: ``seconds`` and ``callLater``.
    :param on_done: called once with ``(session, result)``; result is ``complete``,
        ``aborted`` (client error after OACK, e.g. OVMF's size probe), ``client-error``,
        ``timeout``, ``unanswered`` (never a word from the client), ``stalled``,
        ``superseded`` or ``evicted`` (by the listener), or ``cancelled`` (shutdown).
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
        self._oack = oack
        self._clock = clock
        self._on_done = on_done
        self._max_rto = max(max_rto, MIN_RTO)
        self._stall_timeout = stall_timeout
        self._may_spin = may_spin
        #: bytes to send, once known (a netascii source knows at its end)
        self.size = source.size
        #: number of DATA blocks: the last one is shorter than blksize (maybe empty)
        self.last_block = _END_UNKNOWN if self.size is None else self.size // blksize + 1
        #: first block not yet acknowledged (absolute numbering, from 1)
        self.base = 1
        #: waiting for ACK 0 of the OACK
        self.awaiting_oack_ack = bool(oack)
        self.started = clock.seconds()
        self.retransmits = 0
        self.result: str | None = None
        #: the client has sent an ACK from its TID (so its address is not spoofed)
        self.answered = False
        #: the file name and mode as the client asked (set by the listener)
        self.request_name = ""
        self.request_mode = ""
        #: the unconnected port beside a connected one, answering strangers (ports.py)
        self.sibling: Any = None
        self._tries = 0
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = min(INITIAL_RTO, self._max_rto)
        self._sent_at = 0.0
        self._deadline = 0.0
        self._resent = False
        self._timer: Any = None
        self._last_progress = self.started
        self._buffer = b""
        self._buffer_start = 0
        #: the window built ahead of its ACK, and its first block
        self._ahead: list[bytes] = []
        self._ahead_base = 0
        #: the block after the last window sent
        self._window_end = 1
        self._send: Callable[[bytes, Address], None] = self._not_started
        self._recvfrom: Callable[[int], tuple[bytes, Address]] | None = None

    def _not_started(self, data: bytes, addr: Address) -> None:
        raise RuntimeError("session sends before its port is open")

    # -- Twisted callbacks -----------------------------------------------------------

    def startProtocol(self) -> None:
        assert self.transport is not None
        sock = getattr(self.transport, "socket", None)
        self._send = _raw_sender(sock) if sock is not None else self.transport.write
        self._recvfrom = sock.recvfrom if sock is not None else None
        if sock is not None and getattr(sock, "family", None) == socket.AF_INET6:
            self._recvfrom = _without_scope(sock.recvfrom)
        self._transmit(self._clock.seconds())

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        self._receive(data, addr)
        if (self._recvfrom is not None and self.result is None and self._srtt is not None
                and self._srtt < SPIN_WAIT and self._may_spin()):
            self._spin(self._recvfrom)

    def _spin(self, recvfrom: Callable[[int], tuple[bytes, Address]]) -> None:
        """Read the socket (non-blocking) instead of sleeping in the reactor, handling each
        datagram at once, until none comes for :data:`SPIN_WAIT` or :data:`SPIN_TURN` is
        used up. A read error (nothing to read, or an ICMP error) hands back at once."""
        now = time.perf_counter()
        turn_ends = now + SPIN_TURN
        wait_ends = now + SPIN_WAIT
        while self.result is None and now < turn_ends:
            try:
                data, addr = recvfrom(SPIN_READ_SIZE)
            except BlockingIOError:
                now = time.perf_counter()
                if now >= wait_ends:
                    return
                continue
            except OSError:
                return
            self._receive(data, addr)
            now = time.perf_counter()
            wait_ends = now + SPIN_WAIT

    def _receive(self, data: bytes, addr: Address) -> None:
        if self.result is not None:
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
            self._finish("aborted" if self.awaiting_oack_ack else "client-error")
        else:
            TFTP_DROPPED.labels(reason="unexpected").inc()

    def answer_stranger(self, transport: Any, addr: Address) -> None:
        """A datagram from another address than the client's: error 5, and go on."""
        TFTP_DROPPED.labels(reason="unknown-tid").inc()
        error = packet.encode_error(packet.ERR_UNKNOWN_TID, "unknown transfer ID")
        transport.write(error, addr)
        log_packet(self._log, "->", addr, error)

    # -- the window ------------------------------------------------------------------

    def _ack(self, block16: int) -> None:
        self.answered = True
        now = self._clock.seconds()
        if self.awaiting_oack_ack:
            if block16 != 0:
                return
            self.awaiting_oack_ack = False
            self._progress(now)
            self._transmit(now)
            return
        # The ACK names a block in [base-1, base+window-1]; recover its absolute number.
        base = self.base
        acked = base - 1 + ((block16 - base + 1) & 0xFFFF)
        if acked >= base + self.windowsize or acked > self.last_block:
            return  # out of the window: old duplicate from before a rollover
        if acked < base:
            return  # duplicate ACK: never resend because of it
        self.base = acked + 1
        if acked >= self.last_block:
            self._progress(now)
            self._finish("complete")
            return
        self._send_window()  # first: the client is waiting; the bookkeeping can follow
        self._progress(now)
        self._after_send(now, resend=False)

    @property
    def bytes_acked(self) -> int:
        """Bytes the client has acknowledged so far."""
        acked = (self.base - 1) * self.blksize
        return acked if self.size is None else min(acked, self.size)

    def _progress(self, now: float) -> None:
        if not self._resent:
            sample = now - self._sent_at
            if self._srtt is None:
                self._srtt, self._rttvar = sample, sample / 2
            else:
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
                self._srtt = 0.875 * self._srtt + 0.125 * sample
            self._rto = min(max(self._srtt + 4 * self._rttvar, 2 * self._srtt, MIN_RTO),
                            self._max_rto)
        self._tries = 0
        self._last_progress = now

    def _transmit(self, now: float, resend: bool = False) -> None:
        """Send the OACK, or the window starting at ``base``."""
        if self.awaiting_oack_ack:
            oack = packet.encode_oack(self._oack)
            self._send(oack, self.client)
            log_packet(self._log, "->", self.client, oack)
        else:
            self._send_window()
        self._after_send(now, resend)

    def _send_window(self) -> None:
        base = self.base
        packets = self._ahead if self._ahead_base == base else self._build(base)
        write = self._send
        client = self.client
        for datagram in packets:
            write(datagram, client)
        self._window_end = base + len(packets)

    def _after_send(self, now: float, resend: bool) -> None:
        """Note the send for the RTT, move the deadline, and build the window that the
        expected ACK will ask for, so that sending it is all that is left then."""
        self._resent = resend
        self._sent_at = now
        self._arm(now, min(self._rto * (2 ** self._tries), self._max_rto * 4))
        if self.awaiting_oack_ack or self._window_end > self.last_block:
            return
        if self._ahead_base != self._window_end:
            self._ahead = self._build(self._window_end)
            self._ahead_base = self._window_end

    def _build(self, first: int) -> list[bytes]:
        """The DATA packets of the window that starts at block ``first``."""
        end = min(first + self.windowsize - 1, self.last_block)
        size = self.blksize
        header = packet.data_header
        data = self.source.data
        if data is not None:
            return [header(block & 0xFFFF) + data[(block - 1) * size:block * size]
                    for block in range(first, end + 1)]
        read = self._read
        packets = [header(block & 0xFFFF) + read((block - 1) * size, size)
                   for block in range(first, end + 1)]
        if self.last_block == _END_UNKNOWN:
            return self._find_end(first, packets)
        return packets

    def _find_end(self, first: int, packets: list[bytes]) -> list[bytes]:
        """For a source whose size was not known: the first short block is the last one;
        the window ends there, and the size is now known."""
        for index, datagram in enumerate(packets):
            if len(datagram) - 4 < self.blksize:
                self.last_block = first + index
                self.size = (self.last_block - 1) * self.blksize + len(datagram) - 4
                return packets[:index + 1]
        return packets

    def _arm(self, now: float, timeout: float) -> None:
        """Set the retransmission deadline. The timer is not moved on every send (that is
        per-packet work): one that fires before the deadline waits out the rest. A deadline
        sooner than the timer (the first RTT sample replacing the initial 1 s) gets a new
        timer: the reactor's ``reset`` to sooner searches its whole heap, which a boot storm
        of timers makes slow."""
        self._deadline = deadline = now + timeout
        timer = self._timer
        if timer is not None and deadline < timer.getTime():
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._clock.callLater(timeout, self._timeout)

    def _read(self, offset: int, length: int) -> bytes:
        start = offset - self._buffer_start
        if start < 0 or start + length > len(self._buffer):
            if self.size is not None and offset >= self.size:
                return b""
            want = max(READ_AHEAD, length * self.windowsize)
            self._buffer = self.source.read(offset, want)
            self._buffer_start = offset
            start = 0
        return self._buffer[start:start + length]

    def _timeout(self) -> None:
        self._timer = None
        if self.result is not None:
            return
        now = self._clock.seconds()
        if now < self._deadline - TIMER_SLACK:
            self._timer = self._clock.callLater(self._deadline - now, self._timeout)
            return
        if now - self._last_progress >= self._stall_timeout:
            self._finish("stalled")
            return
        self._tries += 1
        if self._tries > MAX_TRIES:
            self._finish("timeout")
            return
        if not self.answered and self._tries > PRE_ANSWER_RESENDS:
            # not a word from the client after the resends: give the slot back, once the
            # client's own timeout since our last send (if it asked a longer one) is over
            patience = min(self._max_rto + 1.0, UNANSWERED_PATIENCE)
            left = self._sent_at + patience - now
            if self._tries == PRE_ANSWER_RESENDS + 1 and left > TIMER_SLACK:
                self._arm(now, left)
                return
            self._finish("unanswered")
            return
        self.retransmits += 1
        TFTP_RETRANSMITS.inc()
        self._transmit(now, resend=True)

    # -- ending ----------------------------------------------------------------------

    def _finish(self, result: str) -> None:
        if self.result is not None:
            return
        self.result = result
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.source.close()
        self._buffer = b""
        self._ahead = []
        assert self.transport is not None
        self.transport.stopListening()
        if self.sibling is not None:
            self.sibling.stopListening()
            self.sibling = None
        self._on_done(self, result)

    def resend_first(self) -> None:
        """The client asked again before answering: send the OACK or first DATA again,
        unless it went out less than :data:`RETRY_GAP` ago (then the request is a copy the
        network made, and a second OACK arriving after DATA 1 would confuse curl, which
        starts over on any OACK)."""
        now = self._clock.seconds()
        if now - self._sent_at < RETRY_GAP:
            return
        if self.result is None and not self.answered:
            self.retransmits += 1
            TFTP_RETRANSMITS.inc()
            self._transmit(now, resend=True)

    def is_duplicate(self) -> bool:
        """Whether the same request again from this client is a copy of the one that
        started this session, rather than the client starting over: true until the last
        block has been sent to a client that answered. (Not a matter of time: a slow or
        starved client's retried RRQ can arrive seconds late; one that restarts from the
        same TID mid-transfer waits for the old session to time out.)"""
        return not self.answered or self.base + self.windowsize - 1 < self.last_block

    def supersede(self) -> None:
        """The client started over from the same TID: end quietly (it ignores us now)."""
        self.end_quietly("superseded")

    def end_quietly(self, result: str) -> None:
        """End now without a word to the client (superseded, or evicted by the listener
        for a client that has proved its address)."""
        if self.result is None:
            self._finish(result)

    def abort(self, reason: str = "server shutting down") -> None:
        """End the transfer now, telling the client (used on shutdown)."""
        if self.result is None:
            assert self.transport is not None
            error = packet.encode_error(packet.ERR_UNDEFINED, reason)
            self.transport.write(error, self.client)
            log_packet(self._log, "->", self.client, error)
            self._finish("cancelled")


class StrangerProtocol(DatagramProtocol):
    """Beside a session's connected socket, on the same port: whatever reaches it came from
    another address than the client's (the kernel gives the client's to the session)."""

    noisy = False

    def __init__(self, session: TftpSession) -> None:
        self.session = session

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        if self.session.result is None:
            self.session.answer_stranger(self.transport, addr)
