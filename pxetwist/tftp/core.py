"""The TFTP read transfer as a state machine without I/O: events and ``now`` in, datagrams
and the next deadline out.

:class:`Transfer` knows nothing of sockets, reactors or clocks. Each event method takes the
time it happened (``now``, in seconds) and returns the datagrams to send (encoded bytes, in
order; an empty tuple when nothing is to be sent); :attr:`Transfer.deadline` is then the
time the caller must call :meth:`Transfer.timer_fired` at the latest, and
:attr:`Transfer.result` is set once, when the transfer ends. The adapter
(:class:`pxetwist.tftp.session.TftpSession`) moves the bytes, keeps the timer and may read
its socket in a spin; tests drive this class directly.

The window (RFC 7440; 1 block = classic lock-step): an ACK for the last block of the window
moves on; a shorter ACK means the client lost something, so sending resumes from the block
after it; an ACK for a block already acknowledged is ignored (no Sorcerer's Apprentice).
Block numbers roll over past 65535 to 0.

Retransmission adapts to the link: the round trip is measured per window (only on windows
sent once, Karn's rule) and the retransmission timeout is a few smoothed RTTs (RFC 6298
style), bounded below by :data:`MIN_RTO` and above by the client's ``timeout`` option (or
:data:`MAX_RTO`), doubling on each try. After :data:`MAX_TRIES` tries without progress, or
``stall_timeout`` seconds without progress, the transfer gives up.

Until the client has answered once (any ACK), the OACK or first DATA is resent on the timer
at most :data:`PRE_ANSWER_RESENDS` times, and again whenever the client repeats its request
(:meth:`Transfer.retry`; RFC 1350 leaves retransmitting the request to the requester). So a
spoofed RRQ yields one packet sent at most three times, never a stream. A transfer still
unanswered after those resends ends "unanswered": ~7 s after the request, or a little longer
when the client asked for a longer ``timeout`` (its own retransmission must still find the
session), at most :data:`UNANSWERED_PATIENCE` after the last send.

The data comes from a :class:`~pxetwist.tftp.files.Source` (bytes in memory, or ``read``
at an offset). The adapter calls :meth:`Transfer.prepare` after sending what an event
returned: it notes the send of a window that answered an ACK (left until then, so that the
window goes out first) and builds the window the next ACK will ask for, so that answering
that ACK is all sending.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

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
#: Bytes read ahead from a source not held in memory, per ``read``.
READ_AHEAD = 256 * 1024
#: A timer this close to its deadline counts as on time (float rounding of re-arming).
TIMER_SLACK = 1e-6
#: ``last_block`` while the size is not known yet (netascii): the first short block is.
_END_UNKNOWN = 1 << 62

_NOTHING: tuple[bytes, ...] = ()


class Result(enum.StrEnum):
    """How a transfer ended; the value is the word in logs, events and metric labels."""

    #: the client acknowledged the last block
    COMPLETE = "complete"
    #: the client sent an ERROR in answer to the OACK (e.g. OVMF's size probe)
    ABORTED = "aborted"
    #: the client sent an ERROR during the transfer
    CLIENT_ERROR = "client-error"
    #: :data:`MAX_TRIES` retransmissions without progress
    TIMEOUT = "timeout"
    #: never a word from the client after the first packet's resends
    UNANSWERED = "unanswered"
    #: ``stall_timeout`` seconds without progress
    STALLED = "stalled"
    #: the client started over from the same TID (ended by the listener)
    SUPERSEDED = "superseded"
    #: its slot was given to another request (ended by the listener)
    EVICTED = "evicted"
    #: the server shut down
    CANCELLED = "cancelled"
    #: its port could not be opened
    ERROR = "error"


class Transfer:
    """One file to one client, as a state machine.

    :param source: what to send (read, never closed here).
    :param blksize: negotiated block size.
    :param windowsize: negotiated window (blocks per ACK).
    :param oack: options to acknowledge first (empty: start with DATA 1).
    :param max_rto: upper bound of the retransmission timeout (client's ``timeout``).
    :param stall_timeout: seconds without progress before giving up.
    :param now: when the transfer was created.
    """

    __slots__ = (
        "_acked_at",
        "_ahead",
        "_ahead_base",
        "_buffer",
        "_buffer_start",
        "_last_progress",
        "_max_rto",
        "_oack",
        "_resent",
        "_rto",
        "_rttvar",
        "_stall_timeout",
        "_tries",
        "_window_end",
        "answered",
        "awaiting_oack",
        "base",
        "blksize",
        "deadline",
        "last_block",
        "result",
        "retransmits",
        "sent_at",
        "size",
        "source",
        "srtt",
        "windowsize",
    )

    def __init__(self, source: Source, blksize: int, windowsize: int, oack: dict[str, str],
                 max_rto: float, stall_timeout: float, now: float) -> None:
        self.source = source
        self.blksize = blksize
        self.windowsize = windowsize
        #: bytes to send, once known (a netascii source knows at its end)
        self.size = source.size
        #: number of DATA blocks: the last one is shorter than blksize (maybe empty)
        self.last_block = _END_UNKNOWN if self.size is None else self.size // blksize + 1
        #: first block not yet acknowledged (absolute numbering, from 1)
        self.base = 1
        #: waiting for ACK 0 of the OACK
        self.awaiting_oack = bool(oack)
        #: the client has sent an ACK (so its address is not spoofed)
        self.answered = False
        #: packets or windows sent again (timer and repeated requests)
        self.retransmits = 0
        #: how it ended; None while it runs
        self.result: Result | None = None
        #: when :meth:`timer_fired` is due (after :meth:`prepare`; meaningless once ended)
        self.deadline = now
        #: smoothed round trip, once measured
        self.srtt: float | None = None
        #: when the last OACK or window went out
        self.sent_at = now
        self._oack = oack
        self._max_rto = max(max_rto, MIN_RTO)
        self._stall_timeout = stall_timeout
        self._tries = 0
        self._rttvar = 0.0
        self._rto = min(INITIAL_RTO, self._max_rto)
        self._resent = False
        self._last_progress = now
        self._buffer = b""
        self._buffer_start = 0
        #: the window built ahead of its ACK, and its first block
        self._ahead: list[bytes] = []
        self._ahead_base = 0
        #: the block after the last window sent
        self._window_end = 1
        #: when an ACK was answered whose send is not noted yet (-1: none)
        self._acked_at = -1.0

    # -- events ----------------------------------------------------------------------

    def start(self, now: float) -> Sequence[bytes]:
        """The transfer begins: the OACK, or the first window."""
        return self._transmit(now, resend=False)

    def ack(self, block16: int, now: float) -> Sequence[bytes]:
        """An ACK for 16-bit block number ``block16`` arrived from the client."""
        if self._acked_at >= 0.0:
            self._settle()
        if self.result is not None:
            return _NOTHING
        self.answered = True
        if self.awaiting_oack:
            if block16 != 0:
                return _NOTHING
            self.awaiting_oack = False
            self._progress(now)
            return self._transmit(now, resend=False)
        # The ACK names a block in [base-1, base+window-1]; recover its absolute number.
        base = self.base
        acked = base - 1 + ((block16 - base + 1) & 0xFFFF)
        if acked >= base + self.windowsize or acked > self.last_block:
            return _NOTHING  # out of the window: old duplicate from before a rollover
        if acked < base:
            return _NOTHING  # duplicate ACK: never resend because of it
        self.base = acked + 1
        if acked >= self.last_block:
            self._progress(now)
            self.result = Result.COMPLETE
            self._release()
            return _NOTHING
        # the client is waiting: the RTT sample and the new deadline wait for prepare()
        self._acked_at = now
        packets = self._ahead if self._ahead_base == acked + 1 else self._build(acked + 1)
        self._window_end = acked + 1 + len(packets)
        return packets

    def error(self, now: float) -> None:
        """The client sent an ERROR: the transfer ends."""
        self._settle()
        if self.result is None:
            self.result = Result.ABORTED if self.awaiting_oack else Result.CLIENT_ERROR
            self._release()

    def timer_fired(self, now: float) -> Sequence[bytes]:
        """The timer went off: before :attr:`deadline` nothing happens (the caller waits
        out the rest); at it, the window (or OACK) is sent again, or the transfer ends."""
        self._settle()
        if self.result is not None or now < self.deadline - TIMER_SLACK:
            return _NOTHING
        if now - self._last_progress >= self._stall_timeout:
            return self._end(Result.STALLED)
        self._tries += 1
        if self._tries > MAX_TRIES:
            return self._end(Result.TIMEOUT)
        if not self.answered and self._tries > PRE_ANSWER_RESENDS:
            # not a word from the client after the resends: give the slot back, once the
            # client's own timeout since our last send (if it asked a longer one) is over
            patience = min(self._max_rto + 1.0, UNANSWERED_PATIENCE)
            left = self.sent_at + patience - now
            if self._tries == PRE_ANSWER_RESENDS + 1 and left > TIMER_SLACK:
                self.deadline = now + left
                return _NOTHING
            return self._end(Result.UNANSWERED)
        self.retransmits += 1
        return self._transmit(now, resend=True)

    def retry(self, now: float) -> Sequence[bytes]:
        """The client repeated its request before answering: the OACK or first window
        again, unless it went out less than :data:`RETRY_GAP` ago (then the request is a
        copy the network made, and a second OACK arriving after DATA 1 would confuse curl,
        which starts over on any OACK)."""
        self._settle()
        if now - self.sent_at < RETRY_GAP or self.result is not None or self.answered:
            return _NOTHING
        self.retransmits += 1
        return self._transmit(now, resend=True)

    def end(self, result: Result) -> bool:
        """End from outside (superseded, evicted, cancelled, error).

        :returns: whether this ended it (False: it had ended already)."""
        self._settle()
        if self.result is not None:
            return False
        self.result = result
        self._release()
        return True

    def prepare(self) -> None:
        """Call after sending what an event returned: notes the send of a window that
        answered an ACK (the RTT sample and the new :attr:`deadline`, left until now so
        that the window goes out first), and builds the window that the expected ACK will
        ask for, so that answering it is all sending."""
        at = self._acked_at
        if at >= 0.0:  # _settle(), inline: this is once per ACK
            self._acked_at = -1.0
            self._progress(at)
            self._sent(at, resend=False)
        end = self._window_end
        if self.awaiting_oack or end > self.last_block or self._ahead_base == end:
            return
        if self.result is None:
            self._ahead = self._build(end)
            self._ahead_base = end

    # -- what the adapter asks -------------------------------------------------------

    @property
    def bytes_acked(self) -> int:
        """Bytes the client has acknowledged so far."""
        acked = (self.base - 1) * self.blksize
        return acked if self.size is None else min(acked, self.size)

    @property
    def prepared_from(self) -> int | None:
        """The first block of the window built ahead by :meth:`prepare` (None: none is)."""
        return self._ahead_base if self._ahead else None

    def is_duplicate(self) -> bool:
        """Whether the same request again from this client is a copy of the one that
        started this transfer, rather than the client starting over: true until the last
        block has been sent to a client that answered. (Not a matter of time: a slow or
        starved client's retried RRQ can arrive seconds late; one that restarts from the
        same TID mid-transfer waits for the old session to time out.)"""
        return not self.answered or self.base + self.windowsize - 1 < self.last_block

    # -- inside ----------------------------------------------------------------------

    def _settle(self) -> None:
        """The bookkeeping :meth:`ack` left for :meth:`prepare` (done now if another event
        comes first)."""
        at = self._acked_at
        if at >= 0.0:
            self._acked_at = -1.0
            self._progress(at)
            self._sent(at, resend=False)

    def _end(self, result: Result) -> Sequence[bytes]:
        self.result = result
        self._release()
        return _NOTHING

    def _release(self) -> None:
        self._buffer = b""
        self._ahead = []
        self._ahead_base = 0

    def _progress(self, now: float) -> None:
        if not self._resent:
            sample = now - self.sent_at
            srtt = self.srtt
            if srtt is None:
                srtt, self._rttvar = sample, sample / 2
            else:
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(srtt - sample)
                srtt = 0.875 * srtt + 0.125 * sample
            self.srtt = srtt
            self._rto = min(max(srtt + 4 * self._rttvar, 2 * srtt, MIN_RTO), self._max_rto)
        self._tries = 0
        self._last_progress = now

    def _transmit(self, now: float, resend: bool) -> Sequence[bytes]:
        """The OACK, or the window starting at ``base``."""
        packets: Sequence[bytes]
        packets = (packet.encode_oack(self._oack),) if self.awaiting_oack else self._window()
        self._sent(now, resend)
        return packets

    def _window(self) -> list[bytes]:
        base = self.base
        packets = self._ahead if self._ahead_base == base else self._build(base)
        self._window_end = base + len(packets)
        return packets

    def _sent(self, now: float, resend: bool) -> None:
        """Note the send for the RTT and move the deadline."""
        self._resent = resend
        self.sent_at = now
        self.deadline = now + min(self._rto * (2 ** self._tries), self._max_rto * 4)

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
