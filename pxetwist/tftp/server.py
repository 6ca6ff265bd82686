"""The TFTP listener on port 69: parses requests and starts sessions, decides nothing else.

Each accepted RRQ gets a :class:`~pxetwist.tftp.session.TftpSession` on a new
ephemeral port (its TID), opened through the injected reactor. Caps on
sessions (total and per client) are checked before any file is opened, and a
request gets one OACK or first DATA (resent at most twice) until the client
answers or asks again, so a spoofed RRQ cannot be amplified into a stream.

Spoofed RRQs never answer, and would otherwise hold every slot: a session that
has never been answered gives its slot up after its resends (see
:mod:`pxetwist.tftp.session`), and when every slot is taken, a new request takes
the slot of the oldest never-answered session, at once for a client whose address
has answered before (it sent an ACK or ERROR from its TID), and after
:data:`ANSWER_GRACE` for any other client.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.config import TftpConfig
from pxetwist.events import EventBus, Stage
from pxetwist.metrics import (
    TFTP_ACTIVE,
    TFTP_BYTES,
    TFTP_DROPPED,
    TFTP_REQUESTS,
    TFTP_SECONDS,
    TFTP_TRANSFERS,
)
from pxetwist.tftp import packet
from pxetwist.tftp.core import Result
from pxetwist.tftp.files import FileRefusedError, FileResolver
from pxetwist.tftp.ports import SessionSockets, open_session_port
from pxetwist.tftp.session import MAX_RTO, TftpSession, log_packet

#: Protocol limits of the options (RFC 2348, 2349, 7440).
BLKSIZE_RANGE = (8, 65464)
TIMEOUT_RANGE = (1, 255)
WINDOWSIZE_RANGE = (1, 65535)
#: A never-answered session this old may give its slot to any new client when all are
#: taken (a real client answers within a round trip; the first resend comes after 1 s).
ANSWER_GRACE = 1.0
#: Client addresses remembered as having answered (least recently seen forgotten first).
PROVEN_HOSTS = 4096


def session_interface(address: str, client: str) -> str:
    """The address a transfer's port binds to for ``client``: ``[tftp] address`` when it
    is of the client's family, else that family's any-address."""
    if ":" in client:
        return address if ":" in address else "::"
    return "" if ":" in address else address


def negotiate(options: dict[str, str], size: int | None, config: TftpConfig
              ) -> tuple[int, int, float, dict[str, str]]:
    """Accept the options we support, clamped to the config.

    :param size: the bytes to send, or ``None`` when not known up front (netascii):
        then ``tsize`` is left out.
    :returns: ``(blksize, windowsize, max_rto, oack)``; an option with a bad value
        is ignored (not acknowledged), as RFC 2347 allows.
    """
    blksize, windowsize, max_rto = 512, 1, MAX_RTO
    oack: dict[str, str] = {}
    for name, value in options.items():
        # ASCII digits only: str.isdigit() also accepts latin-1 superscripts ("\xb2"),
        # which int() refuses (fuzz finding)
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            continue
        number = int(value)
        if name == "blksize" and number >= BLKSIZE_RANGE[0]:
            blksize = min(number, BLKSIZE_RANGE[1], config.max_blksize)
            oack["blksize"] = str(blksize)
        elif name == "tsize" and size is not None:
            oack["tsize"] = str(size)
        elif name == "timeout" and TIMEOUT_RANGE[0] <= number <= TIMEOUT_RANGE[1]:
            max_rto = float(number)
            oack["timeout"] = str(number)
        elif name == "windowsize" and number >= WINDOWSIZE_RANGE[0]:
            windowsize = min(number, WINDOWSIZE_RANGE[1], config.max_windowsize)
            oack["windowsize"] = str(windowsize)
    return blksize, windowsize, max_rto, oack


class TftpServerProtocol(DatagramProtocol):
    """Listens for RRQs and starts a session per accepted request.

    :param config: ``[tftp]``.
    :param resolver: where files come from.
    :param events: boot events (transfer start and end).
    :param reactor: opens each session's port and runs its timers.
    :param mac_for_ip: the MAC last seen at an address (TFTP itself never learns it),
        so a transfer shows in that machine's timeline.
    """

    noisy = False
    _log = Logger()

    def __init__(
        self,
        config: TftpConfig,
        resolver: FileResolver,
        events: EventBus,
        reactor: Any,
        mac_for_ip: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.events = events
        self.reactor = reactor
        self.mac_for_ip = mac_for_ip or (lambda ip: "")
        self.sessions: set[TftpSession] = set()
        self._per_client: Counter[str] = Counter()
        #: the running session of each client TID, to drop a duplicated RRQ
        self._by_client: dict[tuple[str, int], TftpSession] = {}
        #: running sessions not yet seen answered, oldest first (checked lazily)
        self._unanswered: dict[TftpSession, None] = {}
        #: client addresses that have answered a session (not spoofed)
        self._proven: OrderedDict[str, None] = OrderedDict()
        #: the transfers' plain sockets, watched as one (None: a listenUDP port each)
        self._plain = SessionSockets(reactor) if SessionSockets.usable(reactor) else None

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.request_received(data, addr, self.transport)

    def request_received(self, data: bytes, addr: tuple[str, int], transport: Any) -> None:
        """A datagram on a listening port (``transport``: the IPv4 or the IPv6 one)."""
        log_packet(self._log, "<-", addr, data)
        try:
            request = packet.parse(data)
        except packet.TftpPacketError:
            TFTP_DROPPED.labels(reason="malformed").inc()
            return
        if not isinstance(request, packet.Request):
            TFTP_DROPPED.labels(reason="not-a-request").inc()
            return
        try:
            self._request(request, addr, transport)
        except Exception:
            TFTP_DROPPED.labels(reason="internal-error").inc()
            self._log.failure("TFTP request from {addr} failed", addr=addr)

    def _refuse(self, transport: Any, addr: tuple[str, int], code: int, message: str) -> None:
        error = packet.encode_error(code, message)
        transport.write(error, addr)
        log_packet(self._log, "->", addr, error)

    def _request(self, request: packet.Request, addr: tuple[str, int], transport: Any) -> None:
        host = addr[0]
        if request.opcode == packet.WRQ:
            TFTP_REQUESTS.labels(op="wrq").inc()
            self._refuse(transport, addr, packet.ERR_ACCESS,
                         "write requests are not accepted")
            return
        TFTP_REQUESTS.labels(op="rrq").inc()
        if request.mode not in ("octet", "netascii"):
            self._refuse(transport, addr, packet.ERR_ILLEGAL,
                         f"mode {request.mode[:20]} not supported")
            return
        running = self._by_client.get(addr)
        if running is not None and (running.request_name, running.request_mode) == (
                request.filename, request.mode):
            if running.is_duplicate():
                # The same request again from the same TID (duplicated or retried): the
                # running session answers it, sending its first packet again if the client
                # has not answered yet (the timer resends that only twice). A second
                # session would send the client a second stream from another port
                # (lossy-link finding: curl wrote a block twice when a relay duplicated
                # its RRQ).
                TFTP_DROPPED.labels(reason="duplicate-request").inc()
                running.resend_first()
                return
            running.supersede()  # the client starts over: a new session below
        if self._per_client[host] >= self.config.max_sessions_per_client:
            TFTP_DROPPED.labels(reason="max-sessions-per-client").inc()
            self._refuse(transport, addr, packet.ERR_UNDEFINED, "too many transfers from you")
            return
        if len(self.sessions) >= self.config.max_sessions and not self._evict_for(host):
            TFTP_DROPPED.labels(reason="max-sessions").inc()
            self._refuse(transport, addr, packet.ERR_UNDEFINED, "server busy, try again")
            return
        try:
            source = self.resolver.open(request.filename, request.mode == "netascii")
        except FileRefusedError as e:
            self._log.info("TFTP {file!r} refused to {client}: {reason}",
                           file=request.filename[:100], client=host, reason=e.message)
            self._refuse(transport, addr, e.code, e.message)
            return
        blksize, windowsize, max_rto, oack = negotiate(request.options, source.size, self.config)
        session = TftpSession(source, addr, blksize, windowsize, oack, self.reactor,
                              self._session_done, max_rto=max_rto,
                              stall_timeout=self.config.stall_timeout,
                              may_spin=self._only_session)
        session.request_name, session.request_mode = request.filename, request.mode
        self.sessions.add(session)
        self._unanswered[session] = None
        self._by_client[addr] = session
        self._per_client[host] += 1
        TFTP_ACTIVE.inc()
        self.events.publish(Stage.TFTP_START, mac=self.mac_for_ip(host), ip=host,
                            detail=source.name)
        try:
            open_session_port(self.reactor, session_interface(self.config.address, host),
                              session, connected=self._only_session(), plain=self._plain)
        except Exception:
            session.core.end(Result.ERROR)
            self._forget(session)
            source.close()
            raise
        self._log.debug("TFTP {file} to {client}: started, blksize {blksize} window "
                        "{window} size {size} (blocks are not logged one by one)",
                        file=source.name, client=addr, blksize=blksize, window=windowsize,
                        size=source.size)

    def _only_session(self) -> bool:
        """Whether one transfer runs alone (it may spin, and gets a connected socket)."""
        return len(self.sessions) == 1

    def _evict_for(self, host: str) -> bool:
        """Every slot is taken: end the oldest never-answered session for ``host`` if it may
        have its slot (see the module docstring). :returns: whether a slot is free now."""
        unproven = host not in self._proven
        now = self.reactor.seconds()
        while self._unanswered:
            oldest = next(iter(self._unanswered))
            if oldest.answered:
                del self._unanswered[oldest]
                continue
            if unproven and now - oldest.started < ANSWER_GRACE:
                return False
            oldest.end_quietly("evicted")
            return True
        return False

    def _note_proven(self, host: str) -> None:
        self._proven[host] = None
        self._proven.move_to_end(host)
        if len(self._proven) > PROVEN_HOSTS:
            self._proven.popitem(last=False)

    def _forget(self, session: TftpSession) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self._unanswered.pop(session, None)
            if self._by_client.get(session.client) is session:
                del self._by_client[session.client]
            TFTP_ACTIVE.dec()
            host = session.client[0]
            self._per_client[host] -= 1
            if self._per_client[host] <= 0:
                del self._per_client[host]

    def _session_done(self, session: TftpSession, result: str) -> None:
        self._forget(session)
        host = session.client[0]
        if session.answered or result in ("aborted", "client-error"):
            self._note_proven(host)
        seconds = self.reactor.seconds() - session.started
        sent = session.bytes_acked
        TFTP_TRANSFERS.labels(result=result).inc()
        TFTP_BYTES.inc(sent)
        TFTP_SECONDS.observe(seconds)
        # A client that never answered is most often a spoofed RRQ: at debug, so a flood of
        # them is not a flood of log lines (the event and the metric still count it).
        emit = self._log.debug if result in ("unanswered", "evicted") else self._log.info
        emit(
            "TFTP {file} to {client}: {result}, {bytes} bytes in {seconds:.3f} s, "
            "blksize {blksize} window {window}, {retransmits} retransmits",
            file=session.source.name, client=host, result=result, bytes=sent,
            seconds=seconds, blksize=session.blksize, window=session.windowsize,
            retransmits=session.retransmits,
        )
        stage = Stage.TFTP_END if result in ("complete", "aborted") else Stage.TFTP_ERROR
        self.events.publish(stage, mac=self.mac_for_ip(host), ip=host,
                            detail=f"{session.source.name} {result} {sent} bytes "
                                   f"{seconds:.2f} s")

    def stop_sessions(self) -> None:
        """End every running transfer (shutdown): ports and files are released."""
        for session in list(self.sessions):
            session.abort()
