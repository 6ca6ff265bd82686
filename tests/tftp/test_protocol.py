"""TFTP listener and sessions, driven by bytes on a fake UDP reactor and a Clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxetwist.events import Stage
from pxetwist.tftp import packet
from pxetwist.tftp.core import MAX_TRIES, PRE_ANSWER_RESENDS
from pxetwist.tftp.files import to_netascii
from pxetwist.tftp.server import ANSWER_GRACE
from tests.fakes import FakeUDPPort
from tests.tftp.helpers import CLIENT, Rig, make_rig

FILE = bytes(range(256)) * 40  # 10240 bytes


def test_lock_step_transfer_without_options(tmp_path: Path) -> None:
    """No options: DATA 1 at once from a new port, one block per ACK, short last block."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f")
    port = rig.session_port()
    received = b""
    block = 1
    while True:
        [data] = rig.sent(port)
        assert data == packet.Data(block, FILE[(block - 1) * 512: block * 512])
        received += data.payload  # type: ignore[union-attr]
        port.deliver(packet.encode_ack(block), CLIENT)
        if len(data.payload) < 512:  # type: ignore[union-attr]
            break
        block += 1
    assert received == FILE
    assert block == 21  # 10240 = 20 full blocks + an empty 21st
    assert port.connected is False
    assert rig.server.sessions == set()


def test_options_are_acknowledged_then_ack0_starts_data(tmp_path: Path) -> None:
    """blksize, tsize, timeout, windowsize: OACK first, nothing else until ACK 0."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", blksize=1432, tsize=0, timeout=3, windowsize=4)
    port = rig.session_port()
    assert rig.sent(port) == [packet.OAck({"blksize": "1432", "tsize": str(len(FILE)),
                                           "timeout": "3", "windowsize": "4"})]
    port.deliver(packet.encode_ack(0), CLIENT)
    sent = rig.sent(port)
    assert [p.block for p in sent] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert all(len(p.payload) == 1432 for p in sent)  # type: ignore[union-attr]


def test_lost_oack_is_resent_twice_then_only_when_the_client_asks_again(
        tmp_path: Path) -> None:
    """Before the client answers, the OACK is resent on the timer PRE_ANSWER_RESENDS
    times, then only when the client repeats its RRQ from the same TID."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", tsize=0)
    port = rig.session_port()
    assert len(rig.sent(port)) == 1
    resent = []
    for step in (1.0, 2.0, 3.0):  # resends after 1 s and 2 s more; then silence
        rig.reactor.advance(step)
        resent += rig.sent(port)
    assert [type(p) for p in resent] == [packet.OAck] * PRE_ANSWER_RESENDS
    rig.rrq("f", tsize=0)
    assert [type(p) for p in rig.sent(port)] == [packet.OAck]
    rig.rrq("f", tsize=0)  # at once again: a copy the network made, not a retry
    assert rig.sent(port) == []
    rig.reactor.advance(0.3)
    rig.rrq("f", tsize=0)
    assert [type(p) for p in rig.sent(port)] == [packet.OAck]
    assert len(rig.server.sessions) == 1
    port.deliver(packet.encode_ack(0), CLIENT)
    assert [type(p) for p in rig.sent(port)] == [packet.Data]


def test_after_the_first_ack_a_lost_packet_is_resent_on_the_timer(tmp_path: Path) -> None:
    """Once the client has answered (ACK 0 of the OACK), silence means loss: the next
    window is resent after the timeout, and the client's lost ACK 0 is covered too."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", tsize=0)
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(0), CLIENT)
    assert rig.sent(port) == [packet.Data(1, FILE[:512])]
    rig.reactor.advance(2.0)
    assert rig.sent(port) == [packet.Data(1, FILE[:512])]


def test_options_are_clamped_to_config(tmp_path: Path) -> None:
    """blksize and windowsize are clamped to max_blksize and max_windowsize."""
    rig = make_rig(tmp_path, {"f": FILE}, max_blksize=1468, max_windowsize=8)
    rig.rrq("f", blksize=65464, windowsize=64)
    assert rig.sent(rig.session_port()) == [packet.OAck({"blksize": "1468", "windowsize": "8"})]


def test_bad_option_values_are_ignored(tmp_path: Path) -> None:
    """Unknown options and bad values are left out of the OACK; none left: plain DATA."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", blksize=4, timeout=0, windowsize="x", multicast="")
    [first] = rig.sent(rig.session_port())
    assert first == packet.Data(1, FILE[:512])


def test_non_ascii_digit_option_values_are_ignored(tmp_path: Path) -> None:
    """Latin-1 superscript digits (str.isdigit() but not int()) are ignored, not an
    internal error (fuzz finding: fuzz_tftp_packet.py)."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", blksize="\xb2", windowsize="1\xb9", timeout="\xb3", tsize="0")
    assert rig.sent(rig.session_port()) == [packet.OAck({"tsize": str(len(FILE))})]


def test_client_error_after_oack_ends_quietly(tmp_path: Path) -> None:
    """OVMF's size probe: ERROR 8 after the OACK ends the session as 'aborted'."""
    rig = make_rig(tmp_path, {"f": FILE})
    seen = []
    rig.events.subscribe(seen.append)
    rig.rrq("f", tsize=0, blksize=1468, windowsize=4)
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_error(8, "User aborted the transfer"), CLIENT)
    assert port.connected is False and rig.sent(port) == []
    assert [e.stage for e in seen] == [Stage.TFTP_START, Stage.TFTP_END]
    assert "aborted" in seen[-1].detail
    rig.reactor.advance(60)
    assert rig.sent(port) == []


def test_windowed_ack_short_of_the_window_resends_from_after_it(tmp_path: Path) -> None:
    """Window 4, client ACKs 2 (3 and 4 lost): the next window starts at 3."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", windowsize=4)
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(0), CLIENT)
    assert [p.block for p in rig.sent(port)] == [1, 2, 3, 4]  # type: ignore[union-attr]
    port.deliver(packet.encode_ack(2), CLIENT)
    assert [p.block for p in rig.sent(port)] == [3, 4, 5, 6]  # type: ignore[union-attr]


def test_duplicate_acks_never_trigger_sends(tmp_path: Path) -> None:
    """An ACK for an already acknowledged block is ignored (no Sorcerer's Apprentice)."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f")
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(1), CLIENT)
    assert len(rig.sent(port)) == 1
    port.deliver(packet.encode_ack(1), CLIENT)
    port.deliver(packet.encode_ack(1), CLIENT)
    assert rig.sent(port) == []


def test_loss_at_each_point_of_a_window_is_recovered(tmp_path: Path) -> None:
    """Whichever block of a window is lost, the client's ACK of the block before it
    makes the server resend from there, and the file arrives whole."""
    content = os.urandom(8 * 100 + 17)
    for lost in range(1, 5):
        rig = make_rig(tmp_path / str(lost), {"f": content})
        rig.rrq("f", blksize=100, windowsize=4)
        port = rig.session_port()
        rig.sent(port)
        port.deliver(packet.encode_ack(0), CLIENT)
        got: dict[int, bytes] = {}
        dropped = False
        while port.connected:
            window = rig.sent(port)
            if not window:
                rig.reactor.advance(1.0)
                continue
            expected = len(got) + 1
            for p in window:
                assert isinstance(p, packet.Data)
                if p.block == lost and not dropped:
                    dropped = True
                    continue
                if p.block == expected:
                    got[p.block] = p.payload
                    expected += 1
            port.deliver(packet.encode_ack(expected - 1), CLIENT)
        assert b"".join(got[i] for i in sorted(got)) == content


def test_block_numbers_roll_over(tmp_path: Path) -> None:
    """Past block 65535 the number wraps to 0 and the transfer goes on to the end."""
    content = b"x" * (8 * 65540 + 3)
    rig = make_rig(tmp_path, {"f": content})
    rig.rrq("f", blksize=8, windowsize=16)
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(0), CLIENT)
    numbers: list[int] = []
    total = 0
    while port.connected:
        window = rig.sent(port)
        numbers += [p.block for p in window]  # type: ignore[union-attr]
        total += sum(len(p.payload) for p in window)  # type: ignore[union-attr]
        port.deliver(packet.encode_ack(numbers[-1]), CLIENT)
    assert total == len(content)
    assert numbers[65534:65538] == [65535, 0, 1, 2]
    assert len(numbers) == 65541


def test_unknown_tid_gets_error_5_and_transfer_goes_on(tmp_path: Path) -> None:
    """A packet from another port gets ERROR 5 there; the transfer is undisturbed."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f")
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(1), ("10.0.0.5", 2001))
    [(data, addr)] = port.take()
    assert packet.parse(data) == packet.Error(5, "unknown transfer ID")
    assert addr == ("10.0.0.5", 2001)
    port.deliver(packet.encode_ack(1), CLIENT)
    assert rig.sent(port) == [packet.Data(2, FILE[512:1024])]


def test_retransmits_then_gives_up_and_releases(tmp_path: Path) -> None:
    """When the client goes silent after its first ACK, the window is resent a bounded
    number of times, then the port and file are released."""
    rig = make_rig(tmp_path, {"big": b"z" * (10 * 1024 * 1024)})
    rig.rrq("big")
    port = rig.session_port()
    assert rig.resolver.open_descriptors == 1
    port.take()
    port.deliver(packet.encode_ack(1), CLIENT)
    sends = 0
    for _ in range(200):
        sends += len(port.take())
        if not port.connected:
            break
        rig.reactor.advance(10)
    assert sends == 1 + MAX_TRIES
    assert port.connected is False
    assert rig.resolver.open_descriptors == 0
    assert rig.server.sessions == set()


def test_retransmit_timeout_follows_the_measured_round_trip(tmp_path: Path) -> None:
    """After fast ACKs (1 ms), a lost window is resent within tens of ms, not a second."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f")
    port = rig.session_port()
    for block in range(1, 6):
        rig.sent(port)
        rig.reactor.advance(0.001)
        port.deliver(packet.encode_ack(block), CLIENT)
    assert len(rig.sent(port)) == 1  # block 6 sent; now it is "lost"
    rig.reactor.advance(0.05)
    assert rig.sent(port) == [packet.Data(6, FILE[5 * 512: 6 * 512])]


def test_stalled_transfer_is_dropped(tmp_path: Path) -> None:
    """A client that keeps re-ACKing without progress is dropped after stall_timeout."""
    rig = make_rig(tmp_path, {"f": FILE}, stall_timeout=5)
    rig.rrq("f", timeout=255)
    port = rig.session_port()
    for _ in range(100):
        if not port.connected:
            break
        port.take()
        rig.reactor.advance(1)
    assert port.connected is False
    assert rig.server.sessions == set()


def test_wrq_is_refused_with_error_2(tmp_path: Path) -> None:
    """A write request is answered with ERROR 2 and opens no session."""
    rig = make_rig(tmp_path)
    rig.listener.deliver(packet.encode_request(packet.WRQ, "x"), CLIENT)
    [(data, addr)] = rig.listener.take()
    assert packet.parse(data).code == 2 and addr == CLIENT  # type: ignore[union-attr]
    assert list(rig.reactor.ports) == [69]


def test_missing_file_is_error_1(tmp_path: Path) -> None:
    """A name that does not exist is ERROR 1."""
    rig = make_rig(tmp_path)
    rig.rrq("nope.efi")
    [(data, _)] = rig.listener.take()
    assert packet.parse(data).code == 1  # type: ignore[union-attr]


def test_netascii_converts_line_ends(tmp_path: Path) -> None:
    """netascii mode sends LF as CR LF and a bare CR as CR NUL; tsize is not acknowledged
    (the converted size is known only at the end of the stream)."""
    rig = make_rig(tmp_path, {"t.txt": b"a\nb\rc"})
    rig.rrq("t.txt", mode="netascii", tsize=0, blksize=512)
    port = rig.session_port()
    assert rig.sent(port) == [packet.OAck({"blksize": "512"})]
    port.deliver(packet.encode_ack(0), CLIENT)
    assert rig.sent(port) == [packet.Data(1, b"a\r\nb\r\0c")]
    port.deliver(packet.encode_ack(1), CLIENT)
    assert not port.connected and rig.server.sessions == set()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400).map(
           lambda b: bytes(b"\r\n\n\rx"[c % 5] if c % 3 else c for c in b)),
       blksize=st.integers(8, 40), window=st.integers(1, 4), lose=st.integers(0, 6))
def test_netascii_transfer_sends_the_converted_stream(
        tmp_path_factory: pytest.TempPathFactory, content: bytes, blksize: int, window: int,
        lose: int) -> None:
    """A netascii transfer (any bytes, block and window size, one window lost and resent)
    delivers exactly the whole-file conversion, in blocks cut from the converted stream
    (CR LF and CR NUL pairs split across block edges), and ends on its first short block."""
    rig = make_rig(tmp_path_factory.mktemp("n"), {"t": content})
    rig.rrq("t", mode="netascii", blksize=blksize, windowsize=window)
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_ack(0), CLIENT)
    blocks: list[bytes] = []
    for _ in range(2000):
        window_sent = rig.sent(port)
        if not port.connected:
            break
        if lose == 0:  # this window is lost: the server resends it on its timer
            lose = -1
            rig.reactor.advance(2.0)
            continue
        lose -= 1
        for data in window_sent:
            assert isinstance(data, packet.Data)
            if data.block == (len(blocks) + 1) & 0xFFFF:
                blocks.append(data.payload)
        port.deliver(packet.encode_ack(len(blocks)), CLIENT)
    assert b"".join(blocks) == to_netascii(content)
    assert all(len(b) == blksize for b in blocks[:-1]) and len(blocks[-1]) < blksize
    assert not port.connected and rig.server.sessions == set()


def test_session_caps(tmp_path: Path) -> None:
    """max_sessions_per_client and max_sessions refuse further requests with an error."""
    rig = make_rig(tmp_path, {"f": FILE}, max_sessions=3, max_sessions_per_client=2)
    rig.rrq("f", ("10.0.0.5", 1))
    rig.rrq("f", ("10.0.0.5", 2))
    rig.rrq("f", ("10.0.0.5", 3))
    assert len(rig.server.sessions) == 2
    assert [packet.parse(d).code for d, _ in rig.listener.take()] == [0]  # type: ignore[union-attr]
    rig.rrq("f", ("10.0.0.6", 1))
    rig.rrq("f", ("10.0.0.7", 1))
    assert len(rig.server.sessions) == 3
    assert [packet.parse(d).code for d, _ in rig.listener.take()] == [0]  # type: ignore[union-attr]


def test_duplicated_request_from_the_same_tid_starts_one_transfer(tmp_path: Path) -> None:
    """An RRQ that arrives twice from the same client port (duplicated by the network, or
    retried before the OACK came) runs one session; a new port, or another file, gets its own."""
    rig = make_rig(tmp_path, {"f": FILE, "g": FILE})
    rig.rrq("f", blksize=1432)
    rig.rrq("f", blksize=1432)
    assert len(rig.server.sessions) == 1 and len(rig.reactor.ports) == 2
    assert rig.listener.take() == []
    rig.rrq("f", ("10.0.0.5", 2001), blksize=1432)
    assert len(rig.server.sessions) == 2
    port = rig.session_port()
    rig.sent(port)
    port.deliver(packet.encode_error(8, "probe done"), ("10.0.0.5", 2001))
    rig.rrq("f", ("10.0.0.5", 2001), blksize=1432)  # ended: the same TID may ask again
    assert len(rig.server.sessions) == 2
    rig.rrq("g", blksize=1432)  # another file from a TID with a session: a new request
    assert len(rig.server.sessions) == 3


def test_same_request_after_the_last_block_starts_over(tmp_path: Path) -> None:
    """The same RRQ from the same TID mid-transfer is a late copy (dropped, however late:
    a starved client's retry can come seconds after); once the last block was sent to a
    client that answered, it is the client starting over: the old session ends quietly
    ('superseded') and a new one answers."""
    rig = make_rig(tmp_path, {"f": FILE, "one": b"x" * 100})
    rig.rrq("f")
    first = rig.session_port()
    rig.sent(first)
    first.deliver(packet.encode_ack(1), CLIENT)
    rig.sent(first)
    rig.reactor.advance(0.5)
    rig.sent(first)
    rig.rrq("f")
    assert first.connected and len(rig.server.sessions) == 1
    assert rig.sent(first) == [] and rig.listener.take() == []
    rig.rrq("one", ("10.0.0.5", 3000))
    only = rig.session_port()
    assert rig.sent(only) == [packet.Data(1, b"x" * 100)]
    only.deliver(packet.encode_ack(0), ("10.0.0.5", 3000))  # answered, final ACK lost
    rig.rrq("one", ("10.0.0.5", 3000))
    assert not only.connected
    assert rig.sent(rig.session_port()) == [packet.Data(1, b"x" * 100)]


def test_spoofed_request_gets_at_most_one_window(tmp_path: Path) -> None:
    """Without any ACK, a request yields one OACK, resent at most PRE_ANSWER_RESENDS
    times, never more of the file; the session is released after the retry budget."""
    rig = make_rig(tmp_path, {"f": FILE * 100})
    rig.rrq("f", blksize=1468, windowsize=64)
    port = rig.session_port()
    packets = []
    for _ in range(50):
        packets += rig.sent(port)
        if not port.connected:
            break
        rig.reactor.advance(10)
    assert all(isinstance(p, packet.OAck) for p in packets)
    assert len(packets) == 1 + PRE_ANSWER_RESENDS and not port.connected
    assert rig.resolver.open_descriptors == 0 and rig.server.sessions == set()


def test_unanswered_session_gives_up_its_slot_within_seconds(tmp_path: Path) -> None:
    """A request never answered (spoofed) frees its slot ~7 s after it came: after its
    two resends and one more backoff, not after ~55 s of retry budget (issue 13 item 3)."""
    from twisted.logger import LogLevel, capturedLogs

    rig = make_rig(tmp_path, {"f": FILE})
    ended = []
    rig.events.subscribe(ended.append)
    with capturedLogs() as logged:
        rig.rrq("f", blksize=1432, tsize=0)
        port = rig.session_port()
        rig.reactor.pump([0.01] * 680)
        assert len(rig.server.sessions) == 1
        rig.reactor.pump([0.01] * 40)
    assert rig.server.sessions == set() and not port.connected
    assert "unanswered" in ended[-1].detail
    # a flood of spoofed requests is no flood of info lines: the end is at debug level
    assert not [e for e in logged if e["log_level"] >= LogLevel.info]


def test_unanswered_session_waits_out_the_timeout_the_client_asked(tmp_path: Path) -> None:
    """A lossy client that asked timeout=6 (curl) and whose ACK 0 was lost retransmits it
    6 s after the last OACK it saw (3 s in): the session is still there to answer, and
    only then gives up."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", timeout=6, tsize=0)
    port = rig.session_port()
    rig.reactor.pump([0.01] * 950)
    assert [type(p) for p in rig.sent(port)] == [packet.OAck] * (1 + PRE_ANSWER_RESENDS)
    port.deliver(packet.encode_ack(0), CLIENT)
    assert rig.sent(port) == [packet.Data(1, FILE[:512])]
    other = make_rig(tmp_path / "other", {"f": FILE})
    other.rrq("f", timeout=6, tsize=0)
    other.reactor.pump([0.01] * 980)
    assert len(other.server.sessions) == 1
    other.reactor.pump([0.01] * 40)
    assert other.server.sessions == set()


def _fill(rig: Rig, count: int) -> list[FakeUDPPort]:
    """``count`` spoofed RRQs from as many addresses, never answered: their ports."""
    ports = []
    for i in range(count):
        rig.rrq("f", (f"10.1.0.{i + 1}", 1000))
        ports.append(rig.session_port())
        ports[-1].take()
    return ports


def test_full_server_gives_a_proven_client_the_oldest_unanswered_slot(
        tmp_path: Path) -> None:
    """All slots held by never-answered requests: a client that has answered before takes
    the oldest one's slot at once (that session ends quietly, nothing sent to it); a new
    client is told 'busy' until the oldest has had ANSWER_GRACE to be answered."""
    rig = make_rig(tmp_path, {"f": FILE, "one": b"x"}, max_sessions=3)
    proven = ("10.0.0.9", 3000)
    rig.rrq("one", proven)
    rig.session_port().deliver(packet.encode_ack(1), proven)
    spoofed = _fill(rig, 3)
    rig.rrq("f", ("10.0.0.8", 1))  # a new client: busy
    assert [packet.parse(d) for d, _ in rig.listener.take()] == [
        packet.Error(0, "server busy, try again")]
    rig.rrq("f", proven)
    assert rig.listener.take() == [] and len(rig.server.sessions) == 3
    assert not spoofed[0].connected and spoofed[0].take() == []
    assert spoofed[1].connected and spoofed[2].connected
    assert [type(p) for p in rig.sent(rig.session_port())] == [packet.Data]
    rig.reactor.advance(ANSWER_GRACE)
    rig.rrq("f", ("10.0.0.8", 1))  # the oldest has had its chance: a new client gets it
    assert rig.listener.take() == [] and not spoofed[1].connected


def test_answered_sessions_are_never_evicted(tmp_path: Path) -> None:
    """Slots held by clients that answered stay theirs: even a proven client is told
    'busy'; an OVMF-style ERROR 8 after the OACK also proves the client's address."""
    rig = make_rig(tmp_path, {"f": FILE}, max_sessions=2)
    ovmf = ("10.0.0.7", 1)
    rig.rrq("f", ovmf, tsize=0)
    rig.session_port().deliver(packet.encode_error(8, "probe"), ovmf)
    for host in ("10.0.0.5", "10.0.0.6"):
        rig.rrq("f", (host, 1))
        rig.session_port().deliver(packet.encode_ack(1), (host, 1))
    rig.reactor.advance(5)
    rig.rrq("f", ovmf)
    assert [packet.parse(d) for d, _ in rig.listener.take()] == [
        packet.Error(0, "server busy, try again")]
    assert len(rig.server.sessions) == 2


def test_shutdown_releases_every_session(tmp_path: Path) -> None:
    """stop_sessions ends all transfers and closes their files and ports."""
    rig = make_rig(tmp_path, {"big": b"z" * (9 * 1024 * 1024)})
    rig.rrq("big", ("10.0.0.5", 1))
    rig.rrq("big", ("10.0.0.6", 1))
    assert rig.resolver.open_descriptors == 2
    rig.server.stop_sessions()
    assert rig.resolver.open_descriptors == 0
    assert list(rig.reactor.ports) == [69]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_listener_garbage_sends_nothing_and_raises_nothing(tmp_path: Path, data: bytes) -> None:
    """Random datagrams to port 69 never raise; only well-formed requests get answers."""
    rig = make_rig(tmp_path, {"f": b"x"})
    rig.listener.deliver(data, CLIENT)
    try:
        parsed = packet.parse(data)
    except packet.TftpPacketError:
        parsed = None
    if not isinstance(parsed, packet.Request):
        assert rig.listener.take() == [] and list(rig.reactor.ports) == [69]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_session_garbage_never_raises(tmp_path: Path, datagrams: list[bytes]) -> None:
    """Random datagrams from the client to a session never raise out of the protocol."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f", windowsize=4)
    port = rig.session_port()
    for data in datagrams:
        port.deliver(data, CLIENT)
        rig.reactor.advance(0.3)


def test_debug_log_has_one_decoded_line_per_request_oack_and_error(tmp_path: Path) -> None:
    """At debug level (--verbose) each request, OACK and ERROR in or out has one decoded
    line, a transfer one start line; DATA and ACK blocks have none (issue 13 item 23)."""
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    rig = make_rig(tmp_path, {"f": FILE})
    with capturedLogs() as events:
        rig.rrq("f", blksize=1432, tsize=0)
        port = rig.session_port()
        port.deliver(packet.encode_ack(0), CLIENT)
        for block in range(1, 8):
            port.deliver(packet.encode_ack(block), CLIENT)
        rig.rrq("nope")
        rig.rrq("f", ("10.0.0.5", 2001))
        rig.session_port().deliver(packet.encode_error(0, "bye"), ("10.0.0.5", 2001))
    lines = [formatEvent(e) for e in events if e["log_level"] == LogLevel.debug]
    peer = "10.0.0.5:2000"
    assert lines[0] == f"TFTP <- {peer} RRQ 'f' 'octet' blksize='1432' tsize='0'"
    assert lines[1] == f"TFTP -> {peer} OACK blksize=1432 tsize=10240"
    assert lines[2].startswith("TFTP f to ('10.0.0.5', 2000): started, blksize 1432")
    assert lines[3:] == [
        f"TFTP <- {peer} RRQ 'nope' 'octet'",
        f"TFTP -> {peer} ERROR 1 'file not found'",
        "TFTP <- 10.0.0.5:2001 RRQ 'f' 'octet'",
        lines[6],  # its start line
        "TFTP <- 10.0.0.5:2001 ERROR 0 'bye'",
    ]
    assert not any(" DATA " in line or " ACK " in line for line in lines)
