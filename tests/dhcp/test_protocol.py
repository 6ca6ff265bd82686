"""The DHCP datagram protocol's DISCOVER queue: other messages first, DISCOVERs a few
per reactor turn, the newest kept when too many wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import DhcpPacket, encode
from pxetwist.dhcp.protocol import DISCOVER_BACKLOG, DISCOVERS_PER_TURN, DhcpDatagramProtocol
from pxetwist.metrics import DHCP_DROPPED
from tests.dhcp.clients import plain, requested

CLIENT = ("0.0.0.0", 68)


class Recorder:
    """A controller that only remembers what it was handed, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[int | None, str]] = []
        self.arrived: list[float | None] = []

    def message_received(self, packet: DhcpPacket, source: tuple[str, int],
                         arrived: float | None = None) -> None:
        self.seen.append((opt.message_type(packet), packet.mac))
        self.arrived.append(arrived)


class Turns:
    """A clock whose ``callLater(0, ...)`` runs at the next :meth:`turn`, as a reactor
    runs it after its next read (``twisted.internet.task.Clock`` would run calls
    scheduled during an ``advance(0)`` in that same advance)."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []
        self.now = 0.0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:
        self.calls.append(lambda: f(*args))
        return f  # a handle: not None

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for call in calls:
            call()


def mac(i: int) -> str:
    return f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"


def rig() -> tuple[DhcpDatagramProtocol, Recorder, Turns]:
    clock = Turns()
    controller = Recorder()
    return DhcpDatagramProtocol(controller, packet_dumps=False, clock=clock), controller, clock


def test_a_request_goes_before_the_discovers_read_with_it() -> None:
    """A DISCOVER waits for the end of the turn; a REQUEST read after it is handed on at
    once; with no backlog the DISCOVER is answered in the same reactor turn."""
    protocol, controller, clock = rig()
    protocol.datagramReceived(encode(plain(opt.DISCOVER, mac=mac(1))), CLIENT)
    protocol.datagramReceived(encode(plain(opt.REQUEST, mac=mac(2),
                                           options=[requested("10.0.0.5")])), CLIENT)
    assert controller.seen == [(opt.REQUEST, mac(2))]
    clock.now = 0.5
    clock.turn()
    assert controller.seen == [(opt.REQUEST, mac(2)), (opt.DISCOVER, mac(1))]
    # the DISCOVER is timed from when it was read, not from when it was answered
    assert controller.arrived == [None, 0.0]


def test_discovers_a_few_per_turn_and_the_newest_kept() -> None:
    """At most DISCOVERS_PER_TURN are answered per turn, oldest first; beyond
    DISCOVER_BACKLOG waiting, the oldest are dropped and counted."""
    protocol, controller, clock = rig()
    dropped = DHCP_DROPPED.labels(reason="overload")._value.get()
    extra = 5
    for i in range(DISCOVER_BACKLOG + extra):
        protocol.datagramReceived(encode(plain(opt.DISCOVER, mac=mac(i))), CLIENT)
    assert controller.seen == []
    clock.turn()
    assert len(controller.seen) == DISCOVERS_PER_TURN
    for _ in range(DISCOVER_BACKLOG):
        clock.turn()
    assert [m for _, m in controller.seen] == [mac(i) for i in range(extra,
                                                                   DISCOVER_BACKLOG + extra)]
    assert DHCP_DROPPED.labels(reason="overload")._value.get() == dropped + extra
    assert clock.calls == []


def test_without_a_clock_every_message_is_handed_on_at_once() -> None:
    """No clock (a protocol built alone): no queue."""
    controller = Recorder()
    protocol = DhcpDatagramProtocol(controller, packet_dumps=False)
    protocol.datagramReceived(encode(plain(opt.DISCOVER, mac=mac(1))), CLIENT)
    assert controller.seen == [(opt.DISCOVER, mac(1))]


def test_a_waiting_discover_is_decoded_at_its_turn() -> None:
    """A DISCOVER waits as its bytes: one pushed out of the full queue is never decoded
    (counted as overload only); one that cannot be decoded is dropped and counted as
    malformed when its turn comes, and the others are answered."""
    protocol, controller, clock = rig()
    malformed = DHCP_DROPPED.labels(reason="malformed")._value.get()
    overload = DHCP_DROPPED.labels(reason="overload")._value.get()
    good = encode(plain(opt.DISCOVER, mac=mac(1)))
    # the type is peeked (option 53 comes first) but option 61 runs past the end
    broken = good[:240] + bytes([53, 1, opt.DISCOVER, 61, 200, 1])
    protocol.datagramReceived(broken, CLIENT)
    for i in range(DISCOVER_BACKLOG):
        protocol.datagramReceived(encode(plain(opt.DISCOVER, mac=mac(i))), CLIENT)
    assert DHCP_DROPPED.labels(reason="overload")._value.get() == overload + 1
    protocol.datagramReceived(broken, CLIENT)
    assert DHCP_DROPPED.labels(reason="overload")._value.get() == overload + 2
    assert DHCP_DROPPED.labels(reason="malformed")._value.get() == malformed
    for _ in range(DISCOVER_BACKLOG):
        clock.turn()
    assert len(controller.seen) == DISCOVER_BACKLOG - 1
    assert DHCP_DROPPED.labels(reason="malformed")._value.get() == malformed + 1
