"""The TFTP transfer state machine on its own: events and ``now`` in, datagrams and the
deadline out. No reactor, no socket, no clock: every time here is a number the test
chooses (nothing is measured)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.tftp import packet
from pxetwist.tftp.core import (
    INITIAL_RTO,
    MAX_RTO,
    MAX_TRIES,
    MIN_RTO,
    PRE_ANSWER_RESENDS,
    RETRY_GAP,
    UNANSWERED_PATIENCE,
    Result,
    Transfer,
)
from pxetwist.tftp.files import FileSource, NetasciiSource, to_netascii

FILE = bytes(range(256)) * 40  # 10240 bytes: 20 blocks of 512 and an empty 21st


def make(data: bytes = FILE, blksize: int = 512, window: int = 1,
         oack: dict[str, str] | None = None, max_rto: float = MAX_RTO,
         stall: float = 120.0, now: float = 0.0) -> Transfer:
    return Transfer(FileSource("f", len(data), data=data), blksize, window, oack or {},
                    max_rto, stall, now)


def data_blocks(packets: Sequence[bytes]) -> list[int]:
    out = []
    for datagram in packets:
        message = packet.parse(datagram)
        assert isinstance(message, packet.Data)
        out.append(message.block)
    return out


def test_lock_step_sends_each_block_on_the_ack_before_and_completes_on_the_last() -> None:
    """Window 1: DATA n+1 answers ACK n; the ACK of the short last block completes."""
    core = make()
    assert data_blocks(core.start(0.0)) == [1]
    for block in range(1, 21):
        [datagram] = core.ack(block, block * 0.001)
        assert datagram == packet.encode_data(block + 1, FILE[block * 512:(block + 1) * 512])
    assert core.result is None
    assert core.ack(21, 0.1) == ()
    assert core.result is Result.COMPLETE and core.result == "complete"
    assert core.bytes_acked == len(FILE)


def test_a_window_moves_on_its_last_ack_and_a_short_ack_resends_after_it() -> None:
    """Window 4: ACK 4 sends 5-8; ACK 6 (7 and 8 lost) sends 7-10 at once."""
    core = make(window=4)
    assert data_blocks(core.start(0.0)) == [1, 2, 3, 4]
    core.prepare()
    assert core.prepared_from == 5
    assert data_blocks(core.ack(4, 0.001)) == [5, 6, 7, 8]
    core.prepare()
    assert data_blocks(core.ack(6, 0.002)) == [7, 8, 9, 10]
    assert core.result is None


def test_duplicate_and_stale_acks_send_nothing() -> None:
    """An ACK already acknowledged, or one beyond the window, is ignored (no Sorcerer's
    Apprentice), and the deadline does not move."""
    core = make(window=2)
    core.start(0.0)
    assert data_blocks(core.ack(2, 0.001)) == [3, 4]
    core.prepare()
    deadline = core.deadline
    assert core.ack(2, 0.002) == ()
    assert core.ack(1, 0.002) == ()
    assert core.ack(0, 0.002) == ()
    assert core.ack(9, 0.002) == ()  # never sent
    assert core.deadline == deadline and core.base == 3


def test_block_numbers_roll_over_past_65535_and_the_transfer_ends_at_the_right_block() -> None:
    """A file of more than 65535 blocks: DATA numbers wrap to 0, ACKs are read in the
    window, and the transfer completes on the real last block, not a wrapped early one."""
    data = bytes(range(256)) * 300  # 76800 blocks of 1 byte, and an empty last one
    core = make(data, blksize=1, window=64)
    sent = data_blocks(core.start(0.0))
    absolute = 0
    now = 0.0
    while core.result is None:
        absolute += len(sent)
        now += 0.0001
        assert sent[-1] == absolute & 0xFFFF
        sent = data_blocks(core.ack(absolute & 0xFFFF, now))
        core.prepare()
    assert absolute == len(data) + 1
    assert core.result is Result.COMPLETE and core.bytes_acked == len(data)


def test_an_ack_from_before_the_rollover_is_not_taken_for_one_after_it() -> None:
    """Past block 65536, an ACK numbered like an old block is out of the window."""
    core = make(bytes(70000), blksize=1, window=16)
    core.start(0.0)
    block = 0
    while block < 65540:
        block += 16
        core.ack(block & 0xFFFF, 0.001)
    base = core.base
    assert core.ack(65530 & 0xFFFF, 0.002) == ()
    assert core.base == base


def test_the_rto_comes_from_the_measured_rtt_and_doubles_per_try_until_timeout() -> None:
    """After one RTT sample the resend waits a few RTTs (at least MIN_RTO), doubling on
    each try; MAX_TRIES tries without progress end it as ``timeout``."""
    core = make()
    core.start(0.0)
    core.ack(1, 0.01)  # srtt 10 ms
    core.prepare()
    gaps = []
    now = 0.01
    for _ in range(MAX_TRIES):
        gap = core.deadline - now
        gaps.append(gap)
        now = core.deadline
        assert data_blocks(core.timer_fired(now)) == [2]
    assert MIN_RTO <= gaps[0] < INITIAL_RTO
    assert all(b == pytest.approx(min(2 * a, MAX_RTO * 4))
               for a, b in itertools.pairwise(gaps))
    assert core.retransmits == MAX_TRIES
    assert core.timer_fired(core.deadline) == ()
    assert core.result is Result.TIMEOUT


def test_a_timer_that_fires_early_does_nothing() -> None:
    """The adapter's timer may go off before the deadline: nothing is sent, the deadline
    stays."""
    core = make()
    core.start(0.0)
    deadline = core.deadline
    assert core.timer_fired(deadline / 2) == ()
    assert core.deadline == deadline and core.retransmits == 0


def test_a_silent_client_gets_the_first_packet_three_times_then_unanswered() -> None:
    """Never an ACK: the OACK goes out 1 + PRE_ANSWER_RESENDS times (1 s, then 2 s
    apart); the transfer then ends ``unanswered`` once the client's default timeout
    since the last send is over."""
    core = make(oack={"tsize": "10240"})
    sends = [(0.0, core.start(0.0))]
    while core.result is None:
        now = core.deadline
        packets = core.timer_fired(now)
        if packets:
            sends.append((now, packets))
    assert [type(packet.parse(p)) for _, [p] in sends] == [packet.OAck] * (
        1 + PRE_ANSWER_RESENDS)
    assert [at for at, _ in sends] == [0.0, 1.0, 3.0]
    assert core.result is Result.UNANSWERED
    assert core.deadline == 7.0


def test_a_client_with_a_long_timeout_is_waited_for_after_the_last_resend() -> None:
    """A client that asked ``timeout`` 6 may retry 6 s after our last send: the session
    waits that plus a second (at most UNANSWERED_PATIENCE) before giving up."""
    core = make(oack={"timeout": "6"}, max_rto=6.0)
    core.start(0.0)
    now = 0.0
    while core.result is None:
        now = core.deadline
        core.timer_fired(now)
    assert core.result is Result.UNANSWERED
    last_send = 3.0
    assert now == last_send + min(6.0 + 1.0, UNANSWERED_PATIENCE)


def test_no_progress_for_stall_timeout_ends_it_as_stalled() -> None:
    """A client that only repeats old ACKs is stalled after ``stall_timeout`` seconds."""
    core = make(stall=0.5)
    core.start(0.0)
    core.ack(1, 0.01)
    now = 0.01
    while core.result is None:
        now = core.deadline
        core.timer_fired(now)
        core.ack(1, now)
    assert core.result is Result.STALLED
    assert now - 0.01 >= 0.5


def test_an_error_in_answer_to_the_oack_is_aborted_and_later_a_client_error() -> None:
    """Error 8 (options refused) or any ERROR to the OACK ends ``aborted`` (OVMF's size
    probe); an ERROR mid-transfer ends ``client-error``."""
    probe = make(oack={"tsize": "10240"})
    probe.start(0.0)
    probe.error(0.01)
    assert probe.result is Result.ABORTED
    transfer = make(oack={"tsize": "10240"})
    transfer.start(0.0)
    assert data_blocks(transfer.ack(0, 0.01)) == [1]
    transfer.error(0.02)
    assert transfer.result is Result.CLIENT_ERROR


def test_a_repeated_request_resends_the_first_packet_only_after_the_retry_gap() -> None:
    """A copy of the request right after our send is ignored; a real retry gets the OACK
    again; once the client has answered, never."""
    core = make(oack={"blksize": "512"})
    [oack] = core.start(0.0)
    assert core.retry(RETRY_GAP / 2) == ()
    assert core.retry(RETRY_GAP) == (oack,)
    assert core.retransmits == 1
    core.ack(0, RETRY_GAP + 0.01)
    assert core.retry(5.0) == ()


def test_the_end_happens_once_and_nothing_is_sent_after_it() -> None:
    """``end`` from outside ends a running transfer once; later events send nothing."""
    core = make()
    core.start(0.0)
    assert core.end(Result.EVICTED)
    assert not core.end(Result.CANCELLED)
    assert core.result is Result.EVICTED
    assert core.ack(1, 0.1) == () and core.timer_fired(10.0) == () and core.retry(10.0) == ()
    core.error(10.0)
    assert core.result is Result.EVICTED


def test_a_netascii_stream_ends_at_its_first_short_block() -> None:
    """A source whose size is unknown (netascii) ends on the first short block; the size
    is then known."""
    text = b"line\n" * 300
    converted = to_netascii(text)
    core = Transfer(NetasciiSource(FileSource("t", len(text), data=text)), 512, 4, {},
                    MAX_RTO, 120.0, 0.0)
    sent = b"".join(packet.parse(p).payload for p in core.start(0.0))  # type: ignore[union-attr]
    block = 4
    while core.result is None:
        core.prepare()
        packets = core.ack(block & 0xFFFF, 0.001 * block)
        sent += b"".join(packet.parse(p).payload for p in packets)  # type: ignore[union-attr]
        block += len(packets)
    assert sent == converted and core.size == len(converted)
    assert core.result is Result.COMPLETE


def test_a_request_copy_is_a_duplicate_until_the_last_window_is_sent() -> None:
    """``is_duplicate`` holds until the client has answered and the end is in flight."""
    core = make(window=8)
    core.start(0.0)
    assert core.is_duplicate()
    core.ack(8, 0.001)
    assert core.is_duplicate()
    core.ack(16, 0.002)
    assert not core.is_duplicate()


#: one step of a random client: an ACK (16-bit number), or time passing to the deadline
_steps = st.lists(
    st.one_of(st.tuples(st.just("ack"), st.integers(0, 0xFFFF)),
              st.tuples(st.just("ack-near"), st.integers(-3, 20)),
              st.tuples(st.just("timer"), st.floats(0.0, 3.0)),
              st.tuples(st.just("error"), st.just(0))),
    max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(0, 3000), st.booleans(), _steps)
def test_random_ack_sequences_keep_the_window_invariants(
        window: int, size: int, with_oack: bool, steps: list[tuple[str, float]]) -> None:
    """Whatever the client sends: no DATA beyond the window or the file, none already
    acknowledged, each DATA carries its own bytes, and the transfer ends exactly once."""
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    blksize = 64
    last_block = size // blksize + 1
    core = make(data, blksize=blksize, window=window,
                oack={"tsize": str(size)} if with_oack else None)
    now = 0.0
    ended: list[Result] = []

    def check(packets: Sequence[bytes]) -> None:
        if core.result is not None and core.result not in ended:
            ended.append(core.result)
        for datagram in packets:
            message = packet.parse(datagram)
            if isinstance(message, packet.OAck):
                assert core.awaiting_oack
                continue
            assert isinstance(message, packet.Data)
            absolute = core.base + ((message.block - core.base) & 0xFFFF)
            assert core.base <= absolute < core.base + window
            assert absolute <= last_block
            assert message.payload == data[(absolute - 1) * blksize:absolute * blksize]
        core.prepare()

    check(core.start(now))
    for kind, value in steps:
        now += 0.001
        before = core.result
        if kind == "ack":
            check(core.ack(int(value), now))
        elif kind == "ack-near":
            check(core.ack(int(core.base - 1 + value) & 0xFFFF, now))
        elif kind == "timer":
            now = max(now, core.deadline - float(value))
            check(core.timer_fired(now))
        else:
            core.error(now)
            check(())
        if before is not None:
            assert core.result is before
    for _ in range(4 * MAX_TRIES):  # a silent client: it must end
        if core.result is not None:
            break
        now = max(now, core.deadline)
        check(core.timer_fired(now))
    assert core.result is not None
    assert len(ended) == 1 and ended[0] is core.result
    assert core.ack(core.base & 0xFFFF, now + 1) == () and core.timer_fired(now + 1e6) == ()


def test_an_acks_send_is_noted_by_prepare_or_by_the_next_event() -> None:
    """The window answering an ACK is returned before its bookkeeping: ``prepare`` (or
    whatever event comes first) takes the RTT sample and moves the deadline."""
    first, second = make(), make()
    for core in (first, second):
        core.start(0.0)
        core.ack(1, 0.01)
    first.prepare()
    assert first.srtt == 0.01 and first.deadline > 0.01
    assert second.timer_fired(0.02) == ()  # early: the settled deadline is later
    assert second.srtt == 0.01 and second.deadline == first.deadline
