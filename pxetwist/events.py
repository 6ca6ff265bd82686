"""Boot events: what each machine did, step by step, as it happened.

DHCP, TFTP and HTTP publish; the store (per-MAC history), the machine records,
metrics and the web page's live timeline subscribe. The bus keeps the most
recent events in a bounded ring buffer, numbered, so a long-polling client can
ask for "everything after number N".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class Stage:
    """The names of the boot stages, in the order a machine passes them."""

    DHCP_DISCOVER = "dhcp.discover"
    DHCP_OFFER = "dhcp.offer"
    DHCP_REQUEST = "dhcp.request"
    DHCP_ACK = "dhcp.ack"
    DHCP_NAK = "dhcp.nak"
    DHCP_RELEASE = "dhcp.release"
    DHCP_DECLINE = "dhcp.decline"
    PROXY_OFFER = "proxy.offer"
    PROXY_ACK = "proxy.ack"
    TFTP_START = "tftp.start"
    TFTP_END = "tftp.end"
    TFTP_ERROR = "tftp.error"
    HTTP_SCRIPT = "http.script"
    HTTP_MENU = "http.menu"
    HTTP_KERNEL = "http.kernel"
    HTTP_INITRD = "http.initrd"
    HTTP_FILE = "http.file"
    HTTP_TEMPLATE = "http.template"
    LIFECYCLE = "lifecycle"


@frozen
class BootEvent:
    """One step of one machine's boot.

    :ivar seq: position in the bus's numbering (1, 2, ...); 0 before publishing.
    :ivar time: seconds since the epoch (the reactor's clock).
    :ivar mac: ``aa:bb:cc:dd:ee:ff``, or ``""`` when the step has no MAC (a TFTP read).
    :ivar ip: the client's IPv4 address as text, or ``""``.
    :ivar stage: one of :class:`Stage`.
    :ivar detail: a short human-readable description (file name, address, ...).
    :ivar arch: the client's architecture name when the step knows it, else ``""``.
    :ivar uuid: the client's machine UUID (option 97) when known, else ``""``.
    :ivar server: the server that saw it, when several share one state, else ``""``.
    """

    seq: int
    time: float
    mac: str
    ip: str
    stage: str
    detail: str = ""
    arch: str = ""
    uuid: str = ""
    server: str = ""

    def as_json(self) -> dict[str, object]:
        """The event as the JSON API and the web page show it (``server`` when set)."""
        result: dict[str, object] = {
            "seq": self.seq,
            "time": self.time,
            "mac": self.mac,
            "ip": self.ip,
            "stage": self.stage,
            "detail": self.detail,
            "arch": self.arch,
            "uuid": self.uuid,
        }
        if self.server:
            result["server"] = self.server
        return result


Subscriber = Callable[[BootEvent], object]


@define
class EventBus:
    """Publish/subscribe of :class:`BootEvent` with a bounded ring buffer.

    :ivar clock: gives the time of each event.
    :ivar capacity: how many recent events are kept in memory.
    :ivar server: this server's name, tagging its events when several servers share one
        state (``""``: alone).
    """

    clock: IReactorTime
    capacity: int = 10_000
    server: str = ""
    _ring: deque[BootEvent] = field(init=False)
    _subscribers: list[Subscriber] = field(init=False, factory=list)
    _seq: int = field(init=False, default=0)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self._ring = deque(maxlen=self.capacity)

    @property
    def last_seq(self) -> int:
        """The number of the newest event (0 when none was published)."""
        return self._seq

    def publish(
        self,
        stage: str,
        mac: str = "",
        ip: str = "",
        detail: str = "",
        arch: str = "",
        uuid: str = "",
        server: str | None = None,
        time: float | None = None,
    ) -> BootEvent:
        """Record an event and hand it to every subscriber.

        A subscriber that raises is logged and does not stop the others or the
        publisher: a broken web page must not break a boot.

        :param server: another server's name, for an event it saw (``None``: this one).
        :param time: when that server saw it (``None``: now).
        """
        self._seq += 1
        event = BootEvent(self._seq, self.clock.seconds() if time is None else time, mac, ip,
                          stage, detail, arch, uuid, self.server if server is None else server)
        self._ring.append(event)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                self._log.failure("boot event subscriber {subscriber!r} failed",
                                  subscriber=subscriber)
        return event

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every future event.

        :returns: a function that ends the subscription (safe to call twice).
        """
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def recent(
        self, mac: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[BootEvent]:
        """Events still in the ring, oldest first.

        :param mac: only this machine's events.
        :param after: only events numbered above this (for long-polling).
        :param limit: at most this many, the newest of them.
        """
        selected: Iterator[BootEvent] = (
            e for e in self._ring if e.seq > after and (mac is None or e.mac == mac)
        )
        events = list(selected)
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def count_by_stage(self) -> dict[str, int]:
        """How many events of each stage the ring holds (for the status line)."""
        counts: dict[str, int] = {}
        for event in self._ring:
            counts[event.stage] = counts.get(event.stage, 0) + 1
        return counts
