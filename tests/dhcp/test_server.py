"""DHCP full and proxy mode, driven by bytes on a fake UDP reactor and a Clock."""

from __future__ import annotations

import gc
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from attrs import define, evolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import fail
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher

from pxetwist.config import load_text
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import DhcpPacket, encode, parse
from pxetwist.dhcp.service import DhcpService
from pxetwist.events import EventBus, Stage
from pxetwist.metrics import DHCP_DROPPED
from pxetwist.store import Store
from tests.dhcp.clients import MAC, ipxe_rom, ovmf, plain, requested, server_id
from tests.fakes import FakeUDPPort, FakeUDPReactor

SERVER = "10.77.0.1"
BASE = "http://10.77.0.1:8080"


@define
class Rig:
    reactor: FakeUDPReactor
    service: DhcpService
    store: Store
    events: EventBus
    main: FakeUDPPort
    boot: FakeUDPPort

    def send(self, packet: DhcpPacket, source: tuple[str, int] = ("0.0.0.0", 68),
             port: FakeUDPPort | None = None) -> list[tuple[DhcpPacket, tuple[str, int]]]:
        target = port or self.main
        target.deliver(encode(packet), source)
        self.reactor.advance(0)  # let group commits and their ACKs go
        return [(parse(data), addr) for data, addr in target.take()]


def make_rig(tmp_path: Path, mode: str = "full", extra: str = "", server: str = SERVER,
             store: Store | None = None, server_extra: str = "", dhcp_extra: str = "") -> Rig:
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    config = load_text(
        f"[server]\naddress = {server}\n{server_extra}[dhcp]\nmode = {mode}\n{dhcp_extra}"
        "range_start = 10.77.0.100\n"
        "range_end = 10.77.0.103\nrouter = 10.77.0.1\ndns = 10.77.0.1\ndomain = lab\n"
        "lease_time = 600\n[dhcp.reservations]\n52:54:00:00:00:aa = 10.77.0.50\n"
        f"[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n{extra}", tmp_path)
    reactor = FakeUDPReactor()
    reactor.advance(1_000_000)
    store = store or Store(tmp_path / "state.sqlite")
    events = EventBus(reactor)
    service = DhcpService(config, store, events, reactor, server, BASE)
    service.privilegedStartService()
    return Rig(reactor, service, store, events, reactor.ports[67], reactor.ports[4011])


def dora(rig: Rig, make: object = ipxe_rom, **kw: object) -> DhcpPacket:
    [(offer, _)] = rig.send(make(opt.DISCOVER, **kw))  # type: ignore[operator]
    [(ack, _)] = rig.send(make(opt.REQUEST, options=[  # type: ignore[operator]
        server_id(SERVER), requested(str(offer.yiaddr))], **kw))
    assert opt.message_type(ack) == opt.ACK
    return ack


def test_ipxe_discover_gets_offer_with_boot_script_url(tmp_path: Path) -> None:
    """DHCP-01/04/06: an iPXE client's OFFER has an address, the HTTP script URL, option 60
    PXEClient (so iPXE does not wait for a proxy), 97 echoed, network options."""
    rig = make_rig(tmp_path)
    [(offer, addr)] = rig.send(ipxe_rom(opt.DISCOVER))
    assert addr == ("255.255.255.255", 68)
    assert opt.message_type(offer) == opt.OFFER
    assert offer.yiaddr == IPv4Address("10.77.0.100")
    assert offer.file == f"{BASE}/pxe/boot.ipxe".encode()
    assert offer.siaddr == IPv4Address(SERVER)
    assert offer.option(opt.VENDOR_CLASS) == b"PXEClient"
    assert offer.option(opt.CLIENT_UUID) == ipxe_rom(opt.DISCOVER).option(opt.CLIENT_UUID)
    assert offer.option(opt.SERVER_ID) == IPv4Address(SERVER).packed
    assert offer.option(opt.LEASE_TIME) == (600).to_bytes(4, "big")
    assert offer.option(opt.ROUTER) == IPv4Address("10.77.0.1").packed
    assert offer.option(opt.DOMAIN) == b"lab"
    assert len(encode(offer)) >= 300


def test_reply_options_follow_the_parameter_list_order(tmp_path: Path) -> None:
    """Options come in the client's option-55 order after 53 and 54."""
    rig = make_rig(tmp_path)
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER))
    codes = [code for code, _ in offer.options]
    assert codes[:2] == [opt.MESSAGE_TYPE, opt.SERVER_ID]
    asked = [c for c in codes if c in (1, 3, 6, 15, 60, 66, 67)]
    assert asked == [1, 3, 6, 15, 60, 66, 67]


def test_ovmf_offer_has_tftp_file_and_no_option_60(tmp_path: Path) -> None:
    """DHCP-05: OVMF (arch 7, not iPXE) gets ipxe.efi over TFTP and no option 60 PXEClient
    in a full-mode offer (it would reject it without option 43)."""
    rig = make_rig(tmp_path)
    [(offer, addr)] = rig.send(ovmf(opt.DISCOVER))
    assert offer.file == b"ipxe.efi" and offer.siaddr == IPv4Address(SERVER)
    assert offer.option(opt.VENDOR_CLASS) is None
    assert offer.option(opt.TFTP_SERVER) == SERVER.encode()
    assert addr == ("255.255.255.255", 68)


def test_plain_client_gets_no_boot_options(tmp_path: Path) -> None:
    """A non-PXE client gets an address and network options, no boot file."""
    rig = make_rig(tmp_path)
    [(offer, _)] = rig.send(plain(opt.DISCOVER))
    assert offer.file == b"" and offer.option(opt.BOOTFILE) is None
    assert offer.siaddr == IPv4Address("0.0.0.0")


def test_request_is_acked_only_after_the_lease_is_stored(tmp_path: Path) -> None:
    """DHCP-03: the ACK leaves after the lease is in the store."""
    rig = make_rig(tmp_path)
    sent_before_commit: list[object] = []
    original = rig.store.put_leases

    def spy(rows: object) -> object:
        sent_before_commit.extend(rig.main.written)
        return original(rows)  # type: ignore[arg-type]

    rig.store.put_leases = spy  # type: ignore[method-assign]
    ack = dora(rig)
    assert sent_before_commit == []
    [row] = rig.store.leases_now()
    assert (row.ip, row.mac, row.state) == (str(ack.yiaddr), MAC, "bound")
    assert rig.service.leases_in_use() == 1


def test_same_client_same_address_after_restart(tmp_path: Path) -> None:
    """The same client gets the same address again, even from a restarted server."""
    rig = make_rig(tmp_path)
    first = dora(rig).yiaddr
    rig.store.close()
    again = make_rig(tmp_path)
    [(offer, _)] = again.send(ipxe_rom(opt.DISCOVER, xid=77))
    assert offer.yiaddr == first
    [(other, _)] = again.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:02"))
    assert other.yiaddr != first


def test_reservation(tmp_path: Path) -> None:
    """A reserved MAC gets its address; nobody else does."""
    rig = make_rig(tmp_path)
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:aa"))
    assert offer.yiaddr == IPv4Address("10.77.0.50")
    [(nak, _)] = rig.send(ipxe_rom(opt.REQUEST, options=[requested("10.77.0.50")]))
    assert opt.message_type(nak) == opt.NAK


def test_request_for_another_server_forgets_the_offer(tmp_path: Path) -> None:
    """SELECTING another server: no reply, and our offered address is free again."""
    rig = make_rig(tmp_path)
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER))
    assert rig.send(ipxe_rom(opt.REQUEST, options=[server_id("10.77.0.2"),
                                                     requested(str(offer.yiaddr))])) == []
    [(other, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:02",
                                     options=[requested(str(offer.yiaddr))]))
    assert other.yiaddr == offer.yiaddr


@pytest.mark.parametrize(
    ("options", "why"),
    [([requested("192.168.1.5")], b"wrong network"),
     ([server_id(SERVER), requested("10.77.0.200")], b"address not in the pool"),
     ([requested("10.77.0.200")], b"address not in the pool"),
     ([requested("10.77.0.50")], b"address reserved for another client")],
)
def test_nak_cases(tmp_path: Path, options: list[tuple[int, bytes]], why: bytes) -> None:
    """INIT-REBOOT on a wrong network, SELECTING or INIT-REBOOT of an address outside the
    pool or reserved for another MAC: NAK, broadcast, with the true reason (issue 13
    item 24)."""
    rig = make_rig(tmp_path)
    [(nak, addr)] = rig.send(ipxe_rom(opt.REQUEST, options=options))
    assert opt.message_type(nak) == opt.NAK and nak.option(opt.MESSAGE) == why
    assert addr == ("255.255.255.255", 68) and nak.yiaddr == IPv4Address("0.0.0.0")


def test_address_held_by_another_client_is_nak(tmp_path: Path) -> None:
    """INIT-REBOOT or RENEWING for an address bound to someone else: NAK saying so; a
    RENEWING of an in-subnet address outside the pool: NAK saying that."""
    rig = make_rig(tmp_path)
    ack = dora(rig)
    [(nak, _)] = rig.send(ipxe_rom(opt.REQUEST, mac="52:54:00:00:00:02",
                                   options=[requested(str(ack.yiaddr))]))
    assert opt.message_type(nak) == opt.NAK
    assert nak.option(opt.MESSAGE) == b"address belongs to another client"
    [(nak, _)] = rig.send(ipxe_rom(opt.REQUEST, mac="52:54:00:00:00:02", ciaddr=ack.yiaddr))
    assert nak.option(opt.MESSAGE) == b"address belongs to another client"
    [(nak, _)] = rig.send(ipxe_rom(opt.REQUEST, mac="52:54:00:00:00:02",
                                   ciaddr=IPv4Address("10.77.0.9")))
    assert nak.option(opt.MESSAGE) == b"address not in the pool"


def test_renew_is_unicast_and_extends(tmp_path: Path) -> None:
    """RENEWING (ciaddr set, no 50/54): ACK unicast to ciaddr, lease extended."""
    rig = make_rig(tmp_path)
    ack = dora(rig)
    expires = rig.store.leases_now()[0].expires
    rig.reactor.advance(300)
    [(renewed, addr)] = rig.send(ipxe_rom(opt.REQUEST, ciaddr=ack.yiaddr),
                                 source=(str(ack.yiaddr), 68))
    assert opt.message_type(renewed) == opt.ACK and addr == (str(ack.yiaddr), 68)
    assert rig.store.leases_now()[0].expires == expires + 300


def test_release_and_decline(tmp_path: Path) -> None:
    """DECLINE from the holder quarantines its address; RELEASE frees one (kept for the
    client)."""
    rig = make_rig(tmp_path)
    ack = dora(rig)
    rig.send(ipxe_rom(opt.DECLINE, options=[requested(str(ack.yiaddr)), server_id(SERVER)]))
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:03"))
    assert offer.yiaddr != ack.yiaddr
    other = dora(rig, mac="52:54:00:00:00:04")
    rig.send(ipxe_rom(opt.RELEASE, mac="52:54:00:00:00:04", ciaddr=other.yiaddr,
                      options=[server_id(SERVER)]))
    states = {row.ip: row.state for row in rig.store.leases_now()}
    assert states[str(ack.yiaddr)] == "declined" and states[str(other.yiaddr)] == "released"
    assert rig.service.leases_in_use() == 0
    stages = [e.stage for e in rig.events.recent()]
    assert Stage.DHCP_RELEASE in stages and Stage.DHCP_DECLINE in stages


def dropped(reason: str) -> float:
    return DHCP_DROPPED.labels(reason=reason)._value.get()  # type: ignore[no-any-return]


def forged(kind: int, ip: IPv4Address, **kw: object) -> DhcpPacket:
    """A DECLINE (requested ip) or RELEASE (ciaddr) of ``ip`` from another client."""
    if kind == opt.DECLINE:
        return ipxe_rom(kind, options=[requested(str(ip)), server_id(SERVER)], **kw)
    return ipxe_rom(kind, ciaddr=ip, options=[server_id(SERVER)], **kw)


@pytest.mark.parametrize("kind", [opt.DECLINE, opt.RELEASE])
@pytest.mark.parametrize("who", [{"mac": "52:54:00:00:00:66"},
                                 {"options_id": b"\x00forged-client-id"}])
def test_decline_or_release_from_stranger_ignored(tmp_path: Path, kind: int,
                                                  who: dict[str, object]) -> None:
    """Issue 13 item 1: a DECLINE or RELEASE of a lease from another MAC or client id is
    dropped, counted and logged once; the holder keeps its lease and renews it."""
    rig = make_rig(tmp_path)
    ack = dora(rig)
    logged: list[dict[str, object]] = []
    rig.service.main_controller._log = Logger(observer=logged.append)
    before = dropped("not-lease-holder")
    client_id = who.get("options_id")
    for _ in range(5):
        packet = forged(kind, ack.yiaddr, mac=str(who.get("mac", MAC)))
        if client_id is not None:
            packet = evolve(packet, options=[*packet.options, (opt.CLIENT_ID, client_id)])
        assert rig.send(packet) == []
    assert dropped("not-lease-holder") - before == 5
    assert len([e for e in logged if e["log_level"] == LogLevel.warn]) == 1
    assert [(r.ip, r.mac, r.state) for r in rig.store.leases_now()] == [
        (str(ack.yiaddr), MAC, "bound")]
    assert Stage.DHCP_DECLINE not in {e.stage for e in rig.events.recent()}
    assert Stage.DHCP_RELEASE not in {e.stage for e in rig.events.recent()}
    [(renewed, _)] = rig.send(ipxe_rom(opt.REQUEST, ciaddr=ack.yiaddr),
                              source=(str(ack.yiaddr), 68))
    assert opt.message_type(renewed) == opt.ACK
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:77",
                                     options=[requested(str(ack.yiaddr))]))
    assert offer.yiaddr != ack.yiaddr


def test_failing_store_is_logged_with_context(tmp_path: Path) -> None:
    """Issue 13 item 5: with a store that fails, a REQUEST, RELEASE and DECLINE each log
    one warning naming the message, address and MAC; no Deferred is left unhandled."""
    rig = make_rig(tmp_path)
    first = dora(rig).yiaddr
    second = dora(rig, mac="52:54:00:00:00:02").yiaddr
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        rig.store.put_leases = lambda rows: fail(OSError("disk full"))  # type: ignore[method-assign,assignment,misc]
        rig.send(forged(opt.RELEASE, first))
        rig.send(forged(opt.DECLINE, second, mac="52:54:00:00:00:02"))
        assert rig.send(ipxe_rom(opt.REQUEST, mac="52:54:00:00:00:03",
                                 options=[requested("10.77.0.103")])) == []
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    texts = [formatEvent(e) for e in logged]
    assert not [t for t in texts if "Unhandled error" in t]
    for what, ip, mac in [("DHCPRELEASE", first, MAC),
                          ("DHCPDECLINE", second, "52:54:00:00:00:02"),
                          ("DHCPREQUEST", "10.77.0.103", "52:54:00:00:00:03")]:
        assert len([t for t in texts if t.startswith(f"{what} of {ip} from {mac} not stored")
                    ]) == 1


class AwayableStore(Store):
    """A SQLite store that can play a database server that went away."""

    away = False

    @property
    def writable(self) -> bool:
        return not self.away


def test_no_offer_while_the_store_cannot_commit(tmp_path: Path) -> None:
    """Issue 16: while the shared state's database is away no address is offered (its ACK
    could not follow); the drop is counted, and offers resume once it is back."""
    store = AwayableStore(tmp_path / "state.sqlite")
    rig = make_rig(tmp_path, store=store)
    dropped = DHCP_DROPPED.labels(reason="store-unavailable")._value.get()
    store.away = True
    assert rig.send(ipxe_rom(opt.DISCOVER)) == []
    assert DHCP_DROPPED.labels(reason="store-unavailable")._value.get() == dropped + 1
    store.away = False
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER))
    assert opt.message_type(offer) == opt.OFFER


def test_decline_of_a_free_address_ignored(tmp_path: Path) -> None:
    """Issue 13 item 1: DECLINEs of addresses nobody holds cannot drain the pool."""
    rig = make_rig(tmp_path)
    for last in range(100, 104):
        rig.send(forged(opt.DECLINE, IPv4Address(f"10.77.0.{last}"),
                        mac=f"52:54:00:00:03:{last:02x}"))
    assert rig.store.leases_now() == []
    assert dora(rig).yiaddr == IPv4Address("10.77.0.100")


def test_inform_acks_without_address(tmp_path: Path) -> None:
    """INFORM: ACK with options, no yiaddr, no lease time, unicast to ciaddr."""
    rig = make_rig(tmp_path)
    [(ack, addr)] = rig.send(plain(opt.INFORM, ciaddr=IPv4Address("10.77.0.9")),
                             source=("10.77.0.9", 68))
    assert opt.message_type(ack) == opt.ACK and ack.yiaddr == IPv4Address("0.0.0.0")
    assert ack.option(opt.LEASE_TIME) is None and addr == ("10.77.0.9", 68)


def test_relayed_request_goes_back_to_the_relay_with_option_82(tmp_path: Path) -> None:
    """giaddr set: the reply goes to giaddr:67 with option 82 echoed."""
    rig = make_rig(tmp_path)
    relay_info = b"\x01\x04port"
    [(offer, addr)] = rig.send(plain(opt.DISCOVER, giaddr=IPv4Address("10.77.0.254"),
                                     options=[(opt.RELAY_AGENT, relay_info)]),
                               source=("10.77.0.254", 67))
    assert addr == ("10.77.0.254", 67) and offer.option(opt.RELAY_AGENT) == relay_info
    assert offer.giaddr == IPv4Address("10.77.0.254")


def test_pool_exhaustion_is_silent(tmp_path: Path) -> None:
    """With every address bound, a new client gets no offer (and nothing raises)."""
    rig = make_rig(tmp_path)
    for i in range(4):
        dora(rig, mac=f"52:54:00:00:01:0{i}")
    assert rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:02:00")) == []
    assert rig.service.leases_in_use() == 4


def test_expired_leases_return_to_the_pool(tmp_path: Path) -> None:
    """After lease_time, an address can go to another client."""
    rig = make_rig(tmp_path)
    for i in range(4):
        dora(rig, mac=f"52:54:00:00:01:0{i}")
    rig.reactor.advance(601)
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:02:00"))
    assert offer.yiaddr in {IPv4Address(f"10.77.0.10{i}") for i in range(4)}


def test_rate_limit_per_mac(tmp_path: Path) -> None:
    """A flood from one MAC is cut after the limit; another MAC is still served."""
    rig = make_rig(tmp_path)
    answered = sum(len(rig.send(ipxe_rom(opt.DISCOVER))) for _ in range(50))
    assert answered == 20
    assert len(rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:77"))) == 1
    rig.reactor.advance(1.0)
    assert len(rig.send(ipxe_rom(opt.DISCOVER))) == 1


def test_reply_delay(tmp_path: Path) -> None:
    """[dhcp] reply_delay holds each reply back that many milliseconds."""
    delayed = make_rig(tmp_path, extra="")
    delayed.service.main_controller.config = evolve(delayed.service.config.dhcp,
                                                     reply_delay=250)
    assert delayed.send(ipxe_rom(opt.DISCOVER)) == []
    delayed.reactor.advance(0.25)
    assert len(delayed.main.take()) == 1


def test_events_carry_arch_and_uuid(tmp_path: Path) -> None:
    """Offer and ack events name the MAC, address, architecture and UUID."""
    rig = make_rig(tmp_path)
    dora(rig, make=ovmf)
    offer, ack = [e for e in rig.events.recent() if e.stage in (Stage.DHCP_OFFER,
                                                                 Stage.DHCP_ACK)]
    assert (ack.mac, ack.ip, ack.arch) == (MAC, "10.77.0.100", "uefi-x64")
    assert ack.uuid and "ipxe.efi" in ack.detail


# -- proxy mode ----------------------------------------------------------------------------


def test_proxy_offer_has_no_address_and_pxe_options(tmp_path: Path) -> None:
    """DHCP-07: a proxy OFFER: yiaddr 0, option 60 PXEClient, 97 echoed, 43, boot file."""
    rig = make_rig(tmp_path, mode="proxy")
    [(offer, addr)] = rig.send(ipxe_rom(opt.DISCOVER))
    assert offer.yiaddr == IPv4Address("0.0.0.0") and addr == ("255.255.255.255", 68)
    assert offer.option(opt.VENDOR_CLASS) == b"PXEClient"
    assert offer.option(opt.CLIENT_UUID) is not None
    assert offer.option(opt.VENDOR_SPECIFIC) is not None
    assert offer.file == f"{BASE}/pxe/boot.ipxe".encode()
    assert offer.option(opt.LEASE_TIME) is None


def test_proxy_ignores_plain_clients_and_requests(tmp_path: Path) -> None:
    """Proxy mode never answers non-PXE clients, nor REQUESTs on port 67."""
    rig = make_rig(tmp_path, mode="proxy")
    assert rig.send(plain(opt.DISCOVER)) == []
    assert rig.send(ipxe_rom(opt.REQUEST, options=[requested("10.77.0.5")])) == []
    assert rig.store.leases_now() == []


def test_proxy_bios_rom_gets_a_boot_menu_and_4011_ack(tmp_path: Path) -> None:
    """A BIOS PXE ROM gets option 43 with discovery control, a boot server and menu; its
    REQUEST on 4011 (xid 0, from its address) is ACKed there with the file."""
    rig = make_rig(tmp_path, mode="proxy")
    rom = ovmf  # build a non-iPXE BIOS client from OVMF's shape with arch 0
    discover = rom(opt.DISCOVER)
    discover = DhcpPacket(op=1, xid=3, chaddr=discover.chaddr, options=[
        (opt.MESSAGE_TYPE, bytes([opt.DISCOVER])), (opt.CLIENT_ARCH, b"\x00\x00"),
        (opt.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001")])
    [(offer, _)] = rig.send(discover)
    vendor = offer.option(opt.VENDOR_SPECIFIC)
    assert vendor is not None and vendor[:3] == bytes([6, 1, 7])
    assert offer.file == b"undionly.kpxe"
    request = DhcpPacket(op=1, xid=0, chaddr=discover.chaddr, ciaddr=IPv4Address("10.77.0.60"),
                         options=[(opt.MESSAGE_TYPE, bytes([opt.REQUEST])),
                                  (opt.CLIENT_ARCH, b"\x00\x00"),
                                  (opt.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
                                  (opt.VENDOR_SPECIFIC, b"\x47\x04\x80\x00\x00\x00\xff")])
    [(ack, addr)] = rig.send(request, source=("10.77.0.60", 4011), port=rig.boot)
    assert opt.message_type(ack) == opt.ACK and addr == ("10.77.0.60", 4011)
    assert ack.file == b"undionly.kpxe" and ack.xid == 0
    assert ack.option(opt.VENDOR_SPECIFIC) == b"\x47\x04\x80\x00\x00\x00\xff"


def test_proxy_uefi_is_told_to_use_the_offered_file(tmp_path: Path) -> None:
    """UEFI clients get discovery control 8 and the EFI file in the offer itself."""
    rig = make_rig(tmp_path, mode="proxy")
    [(offer, _)] = rig.send(ovmf(opt.DISCOVER))
    assert offer.option(opt.VENDOR_SPECIFIC) == bytes([6, 1, 8, 255])
    assert offer.file == b"ipxe.efi"


def test_http_boot_client_gets_a_url_and_httpclient(tmp_path: Path) -> None:
    """UEFI HTTP boot (arch 16, HTTPClient): an http:// URL and option 60 HTTPClient."""
    rig = make_rig(tmp_path)
    discover = DhcpPacket(op=1, xid=9, chaddr=bytes.fromhex("525400000009"), options=[
        (opt.MESSAGE_TYPE, bytes([opt.DISCOVER])), (opt.CLIENT_ARCH, b"\x00\x10"),
        (opt.VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003000")])
    [(offer, _)] = rig.send(discover)
    assert offer.file == f"{BASE}/files/ipxe.efi".encode()
    assert offer.option(opt.VENDOR_CLASS) == b"HTTPClient"


def arm32(kind: int, mac: str = "52:54:00:00:0a:01") -> DhcpPacket:
    """A UEFI arm32 PXE client (option 93 = 10), which no built-in loader fits."""
    return DhcpPacket(op=1, xid=10, chaddr=bytes.fromhex(mac.replace(":", "")), options=[
        (opt.MESSAGE_TYPE, bytes([kind])), (opt.CLIENT_ARCH, b"\x00\x0a"),
        (opt.VENDOR_CLASS, b"PXEClient:Arch:00010:UNDI:003000")])


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_no_loader_no_boot_file_logged_once_per_mac(tmp_path: Path, mode: str) -> None:
    """Issue 13 item 12: a UEFI arm32 client gets no boot file (proxy: no answer; full:
    its address without boot options), logged once per MAC, never the BIOS loader."""
    rig = make_rig(tmp_path, mode=mode)
    logged: list[dict[str, object]] = []
    rig.service.main_controller._log = Logger(observer=logged.append)
    for mac in ("52:54:00:00:0a:01", "52:54:00:00:0a:01", "52:54:00:00:0a:02"):
        replies = rig.send(arm32(opt.DISCOVER, mac))
        if mode == "proxy":
            assert replies == []
        else:
            [(offer, _)] = replies
            assert opt.message_type(offer) == opt.OFFER and offer.yiaddr != IPv4Address(0)
            assert offer.file == b"" and offer.option(opt.BOOTFILE) is None
            assert offer.siaddr == IPv4Address(0)
    texts = [formatEvent(e) for e in logged if "no loader" in formatEvent(e)]
    assert len(texts) == 2 and "uefi-arm32" in texts[0] and "52:54:00:00:0a:01" in texts[0]


def test_start_up_names_architectures_without_loader(tmp_path: Path) -> None:
    """Issue 13 item 12: starting the DHCP service says which architectures have no
    loader."""
    rig = make_rig(tmp_path)
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        rig.service.startService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    [text] = [formatEvent(e) for e in logged if "no boot loader" in formatEvent(e)]
    assert "uefi-arm32" in text and "uefi-arm64" in text and "uefi-x64," not in text
    rig.service.stopService()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_garbage_to_either_port_sends_nothing(tmp_path: Path, data: bytes) -> None:
    """Random datagrams to 67 or 4011 never raise and get no answer."""
    import tempfile

    for mode in ("full", "proxy"):
        rig = make_rig(Path(tempfile.mkdtemp(dir=tmp_path)), mode=mode)
        for port in (rig.main, rig.boot):
            port.deliver(data, ("10.0.0.9", 68))
        rig.reactor.advance(1)
        try:
            parse(data)
        except Exception:
            assert rig.main.take() == [] and rig.boot.take() == []
        rig.store.close()


def test_debug_logs_every_packet_in_and_out_decoded_only_when_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 23: each DHCP packet in and out has a debug event whose text is a
    decoded one-line summary; nothing is decoded for it unless the line is written."""
    from pxetwist.dhcp import server as server_module

    rig = make_rig(tmp_path, mode="proxy")
    logged: list[dict[str, object]] = []
    rig.service.main._log = Logger(observer=logged.append)
    calls: list[object] = []
    real = opt.describe
    monkeypatch.setattr(server_module.opt, "describe", lambda p: calls.append(p) or real(p))
    rig.send(ovmf(opt.DISCOVER))
    debug = [e for e in logged if e["log_level"] == LogLevel.debug]
    assert len(debug) == 2 and calls == []  # filtered out: never formatted, never decoded
    incoming, outgoing = (formatEvent(e) for e in debug)
    assert incoming.startswith("DHCP in from 0.0.0.0:68: DISCOVER xid=0x00000099 mac=" + MAC)
    assert "arch=7" in incoming and "option60=PXEClient:Arch:00007" in incoming
    assert "option77=no" in incoming and "ciaddr=0.0.0.0" in incoming
    assert outgoing.startswith("DHCP out to 255.255.255.255:68: OFFER xid=0x00000099")
    assert "file='ipxe.efi'" in outgoing and "giaddr=0.0.0.0" in outgoing
    assert len(calls) == 2


def test_without_packet_dumps_no_debug_event_per_packet(tmp_path: Path) -> None:
    """``packet_dumps`` off (``twistd pxeboot`` without --verbose): the DISCOVER is
    answered as before, with no debug event in or out (each costs time in a storm)."""
    rig = make_rig(tmp_path, mode="proxy")
    logged: list[dict[str, object]] = []
    rig.service.main._log = Logger(observer=logged.append)
    rig.service.main.packet_dumps = False
    [(offer, _)] = rig.send(ovmf(opt.DISCOVER))
    assert opt.message_type(offer) == opt.OFFER
    assert [e for e in logged if e["log_level"] == LogLevel.debug] == []


def test_repeated_discovers_get_the_same_offer(tmp_path: Path) -> None:
    """A client that DISCOVERs again (iPXE sends two) is offered the same address, so it
    cannot drain the pool by repeating itself."""
    rig = make_rig(tmp_path)
    offers = {rig.send(ipxe_rom(opt.DISCOVER))[0][0].yiaddr for _ in range(10)}
    assert len(offers) == 1
    [(other, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:02"))
    assert other.yiaddr not in offers
