"""The boot-event bus: numbering, ring bound, filters, subscribers."""

from __future__ import annotations

from twisted.internet.task import Clock

from pxetwist.events import BootEvent, EventBus, Stage


def test_publish_numbers_and_times_events() -> None:
    """Events get increasing numbers and the clock's time."""
    clock = Clock()
    clock.advance(100)
    bus = EventBus(clock)
    first = bus.publish(Stage.DHCP_OFFER, mac="52:54:00:00:00:01", ip="10.0.0.5")
    clock.advance(1)
    second = bus.publish(Stage.DHCP_ACK, mac="52:54:00:00:00:01", ip="10.0.0.5")
    assert (first.seq, first.time, second.seq, second.time) == (1, 100.0, 2, 101.0)
    assert bus.last_seq == 2


def test_ring_is_bounded_and_filters() -> None:
    """The ring keeps only the newest events; recent() filters by MAC, number and limit."""
    bus = EventBus(Clock(), capacity=5)
    for i in range(8):
        bus.publish(Stage.HTTP_FILE, mac=f"52:54:00:00:00:0{i % 2}", detail=str(i))
    assert [e.detail for e in bus.recent()] == ["3", "4", "5", "6", "7"]
    assert [e.detail for e in bus.recent(mac="52:54:00:00:00:01")] == ["3", "5", "7"]
    assert [e.detail for e in bus.recent(after=6)] == ["6", "7"]
    assert [e.detail for e in bus.recent(limit=2)] == ["6", "7"]
    assert bus.recent(limit=0) == []


def test_subscribers_see_events_and_a_failing_one_does_not_stop_others() -> None:
    """Every subscriber gets each event; one that raises is logged and skipped."""
    bus = EventBus(Clock())
    seen: list[BootEvent] = []

    def broken(event: BootEvent) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(seen.append)
    bus.publish(Stage.TFTP_START, ip="10.0.0.5", detail="undionly.kpxe")
    unsubscribe()
    unsubscribe()
    bus.publish(Stage.TFTP_END, ip="10.0.0.5")
    assert [e.stage for e in seen] == [Stage.TFTP_START]
    assert seen[0].as_json()["detail"] == "undionly.kpxe"
