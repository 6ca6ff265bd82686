"""The session's per-packet fast path: spinning on its socket for a fast client, the window
built ahead of its ACK, and a retransmission deadline that moves without moving the timer.

The spin reads a real socket object's ``recvfrom``; here that socket is a scripted fake, so
each test says exactly which datagrams are waiting and sees what was sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.internet.task import Clock

from pxetwist.tftp import packet
from pxetwist.tftp.files import FileSource
from pxetwist.tftp.session import MIN_RTO, SPIN_WAIT, TftpSession
from tests.tftp.helpers import make_rig

CLIENT = ("10.0.0.5", 2000)
STRANGER = ("10.0.0.6", 2000)
FILE = bytes(range(256)) * 40  # 10240 bytes: 20 blocks of 512 and an empty 21st


class ScriptedSocket:
    """``sendto`` records; ``recvfrom`` hands out queued datagrams, then would block
    (or, with ``endless``, hands out the same one for ever)."""

    def __init__(self, endless: tuple[bytes, tuple[str, int]] | None = None) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.queue: list[tuple[bytes, tuple[str, int]]] = []
        self.reads = 0
        self.endless = endless

    def getpeername(self) -> tuple[str, int]:
        raise OSError("not connected")

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((data, addr))
        return len(data)

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        self.reads += 1
        if self.endless is not None:
            return self.endless
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)


class Transport:
    def __init__(self, sock: ScriptedSocket) -> None:
        self.socket = sock
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True


def start(sock: ScriptedSocket, clock: Clock, may_spin: Callable[[], bool],
          windowsize: int = 1) -> TftpSession:
    results: list[str] = []
    session = TftpSession(FileSource("f", len(FILE), data=FILE), CLIENT, 512, windowsize, {},
                          clock, lambda s, result: results.append(result), may_spin=may_spin)
    session.transport = Transport(sock)  # type: ignore[assignment]
    session.startProtocol()
    return session


def blocks(sock: ScriptedSocket) -> list[int]:
    out = []
    for data, addr in sock.sent:
        assert addr == CLIENT
        message = packet.parse(data)
        assert isinstance(message, packet.Data)
        out.append(message.block)
    return out


def test_a_fast_client_is_served_from_the_spin_without_the_reactor() -> None:
    """Once the RTT is below SPIN_WAIT, ACKs already waiting on the socket are read and
    answered in the same call, to the end of the file."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: True)
    sock.queue = [(packet.encode_ack(block), CLIENT) for block in range(2, 22)]
    session.datagramReceived(packet.encode_ack(1), CLIENT)
    assert blocks(sock) == list(range(1, 22))
    assert session.result == "complete"
    assert sock.queue == []


def test_the_spin_answers_strangers_and_ignores_duplicates_like_the_reactor_path() -> None:
    """In the spin, a stranger gets error 5 and a duplicate ACK sends nothing."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: True)
    sock.queue = [(packet.encode_ack(1), CLIENT), (packet.encode_ack(2), STRANGER),
                  (packet.encode_ack(2), CLIENT)]
    session.datagramReceived(packet.encode_ack(1), CLIENT)
    assert blocks(sock) == [1, 2, 3]  # the duplicate ACK 1 sent nothing
    transport = session.transport
    assert isinstance(transport, Transport)
    [(error, to)] = transport.written
    assert to == STRANGER and packet.parse(error) == packet.Error(
        packet.ERR_UNKNOWN_TID, "unknown transfer ID")
    assert session.result is None


def test_no_spin_when_another_session_runs() -> None:
    """With another session running, the socket is not read outside the reactor."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: False)
    sock.queue = [(packet.encode_ack(2), CLIENT)]
    session.datagramReceived(packet.encode_ack(1), CLIENT)
    assert sock.reads == 0
    assert blocks(sock) == [1, 2]


def test_no_spin_for_a_slow_client() -> None:
    """A client slower than SPIN_WAIT would only burn the CPU: wait in the reactor."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: True)
    sock.queue = [(packet.encode_ack(2), CLIENT)]
    clock.advance(SPIN_WAIT * 2)
    session.datagramReceived(packet.encode_ack(1), CLIENT)
    assert sock.reads == 0


def test_the_spin_hands_the_reactor_back_even_under_a_flood() -> None:
    """A peer that never stops sending (here: the same stale ACK) cannot keep the reactor:
    the spin returns after its turn, having sent nothing for the duplicates."""
    sock, clock = ScriptedSocket(endless=(packet.encode_ack(1), CLIENT)), Clock()
    session = start(sock, clock, may_spin=lambda: True)
    session.datagramReceived(packet.encode_ack(1), CLIENT)
    assert sock.reads > 0
    assert blocks(sock) == [1, 2]
    assert session.result is None


def test_the_next_window_is_built_before_its_ack_and_a_short_ack_rebuilds() -> None:
    """After sending a window the adapter has the core build the next; a short ACK
    resends from the block after it, and the window after that is built again."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: False, windowsize=4)
    assert blocks(sock) == [1, 2, 3, 4]
    assert session.core.prepared_from == 5
    session.datagramReceived(packet.encode_ack(2), CLIENT)  # 3 and 4 were lost
    assert blocks(sock)[4:] == [3, 4, 5, 6]
    session.datagramReceived(packet.encode_ack(6), CLIENT)
    assert blocks(sock)[8:] == [7, 8, 9, 10]
    assert sock.sent[-1][0] == packet.encode_data(10, FILE[9 * 512:10 * 512])


def test_steady_acks_move_the_deadline_and_silence_resends_once_on_time() -> None:
    """The timer is armed once and not moved per packet, yet a loss is resent MIN_RTO after
    the last send, not after the first arming."""
    sock, clock = ScriptedSocket(), Clock()
    session = start(sock, clock, may_spin=lambda: False)
    step = MIN_RTO * 0.6
    for block in range(1, 11):  # each ACK comes after 0.6 RTO: longer than one RTO in all
        clock.advance(step)
        session.datagramReceived(packet.encode_ack(block), CLIENT)
    assert blocks(sock) == list(range(1, 12))
    assert session.retransmits == 0
    rto = session.core.deadline - clock.seconds()
    assert MIN_RTO <= rto < 1.0  # measured, not the initial 1 s
    clock.advance(rto * 0.9)
    assert len(sock.sent) == 11
    clock.advance(rto * 0.2)
    assert blocks(sock)[11:] == [11]
    assert session.retransmits == 1


def test_the_listener_lets_a_session_spin_only_while_it_runs_alone(tmp_path: Path) -> None:
    """``may_spin`` is true only while the session is the only one."""
    rig = make_rig(tmp_path, {"f": FILE})
    rig.rrq("f")
    [first] = rig.server.sessions
    assert first.may_spin()
    rig.rrq("f", addr=STRANGER)
    assert not first.may_spin()
    second = next(s for s in rig.server.sessions if s is not first)
    assert not second.may_spin()
    first.abort()
    assert second.may_spin()
