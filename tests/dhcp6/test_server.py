"""DHCPv6 full and stateless mode, driven through the protocol on a fake transport and a
Clock: leases, boot options (RFC 5970), relays, and which MAC a client is."""

from __future__ import annotations

import uuid
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from attrs import define
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import FakeDatagramTransport

from pxetwist.config import load_text
from pxetwist.dhcp.leases import LeasePool
from pxetwist.dhcp6 import packet as p6
from pxetwist.dhcp6.packet import Message6, Relay6
from pxetwist.dhcp6.protocol import Dhcp6DatagramProtocol
from pxetwist.dhcp6.server import Dhcp6Server
from pxetwist.events import EventBus
from pxetwist.metrics import DHCP_DROPPED
from pxetwist.policy import BootPolicy
from pxetwist.store import Store
from tests.dhcp.test_server import AwayableStore
from tests.dhcp6.clients import LINK_LOCAL, LL_DUID, ia, ipxe, ovmf, plain
from tests.fakes import FakeUDPReactor

SERVER = IPv6Address("fd77::1")
BASE = "http://[fd77::1]:8080"
SERVER_DUID = p6.duid_ll(bytes.fromhex("020000000001"))


@define
class Rig:
    reactor: FakeUDPReactor
    server: Dhcp6Server
    protocol: Dhcp6DatagramProtocol
    transport: FakeDatagramTransport
    store: Store
    events: EventBus

    def send(self, message: p6.Packet, source: tuple[str, int] = (LINK_LOCAL, 546)
             ) -> list[tuple[p6.Packet, tuple[str, int]]]:
        self.protocol.datagramReceived(p6.encode(message), source)
        self.reactor.advance(0)  # group commit, then the Reply
        out = [(p6.parse(data), addr) for data, addr in self.transport.written]
        self.transport.written.clear()
        return out

    def one(self, message: p6.Packet) -> Message6:
        [(reply, _)] = self.send(message)
        assert isinstance(reply, Message6)
        return reply


def make_rig(tmp_path: Path, mode: str = "full", extra: str = "",
             store: Store | None = None) -> Rig:
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    config = load_text(
        f"[dhcp]\nmode = off\n[dhcp6]\nmode = {mode}\ninterface = lo\n"
        "range_start = fd77::100\nrange_end = fd77::102\nlease_time = 600\n"
        "preferred_lifetime = 300\ndns = fd77::53\n"
        f"[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n{extra}", tmp_path)
    reactor = FakeUDPReactor()
    reactor.advance(1_000_000)
    store = store or Store(tmp_path / "state.sqlite")
    events = EventBus(reactor)
    pool = LeasePool(config.dhcp6, store, reactor) if mode == "full" else None
    if pool is not None:
        pool.load()
    protocol = Dhcp6DatagramProtocol(interface="lo")
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    server = Dhcp6Server(config.dhcp6, pool, BootPolicy(config.boot, BASE, str(SERVER)),
                         events, reactor, SERVER_DUID, SERVER, protocol.send)
    protocol.controller = server
    return Rig(reactor, server, protocol, transport, store, events)


def addresses(reply: Message6) -> list[str]:
    return [str(a.address) for body in reply.all(p6.IA_NA)
            for a in p6.parse_ia_na(body).addresses if a.valid]


def request_of(advertise: Message6, make: object = ovmf) -> Message6:
    iaid_addrs = [(p6.parse_ia_na(b).iaid, [str(a.address) for a in p6.parse_ia_na(b).addresses])
                  for b in advertise.all(p6.IA_NA)]
    ias = [ia(iaid, *addrs) for iaid, addrs in iaid_addrs]
    return make(p6.REQUEST, (p6.SERVERID, SERVER_DUID), *ias)  # type: ignore[operator,no-any-return]


def test_ovmf_solicit_gets_address_and_tftp_url(tmp_path: Path) -> None:
    """Full mode: OVMF's Solicit gets an Advertise with an IA_NA address from the pool and
    option 59 tftp://[addr]/ipxe.efi, no vendor class (a DHCP-only offer with a boot file),
    sent back to its link-local address with the interface as scope."""
    rig = make_rig(tmp_path)
    [(advertise, where)] = rig.send(ovmf(p6.SOLICIT, ia(1)))
    assert isinstance(advertise, Message6)
    assert advertise.msg_type == p6.ADVERTISE and advertise.xid == 0x1234
    assert where == (f"{LINK_LOCAL}%lo", 546)
    assert addresses(advertise) == ["fd77::100"]
    assert advertise.option(p6.BOOTFILE_URL) == b"tftp://[fd77::1]/ipxe.efi"
    assert advertise.option(p6.VENDOR_CLASS) is None
    assert advertise.option(p6.SERVERID) == SERVER_DUID
    assert advertise.option(p6.DNS_SERVERS) == IPv6Address("fd77::53").packed
    assert rig.store.leases_now() == []  # an Advertise binds nothing


def test_request_is_replied_only_after_the_lease_is_stored(tmp_path: Path) -> None:
    """The Reply leaves once the lease is committed; its row names the DUID and the MAC
    found in the EUI-64 source address."""
    rig = make_rig(tmp_path)
    advertise = rig.one(ovmf(p6.SOLICIT, ia(1)))
    rig.protocol.datagramReceived(p6.encode(request_of(advertise)), (LINK_LOCAL, 546))
    assert rig.transport.written == []  # not yet on disk
    rig.reactor.advance(0)
    [(data, _)] = rig.transport.written
    reply = p6.parse(data)
    assert isinstance(reply, Message6) and reply.msg_type == p6.REPLY
    assert addresses(reply) == ["fd77::100"]
    [row] = rig.store.leases_now()
    assert (row.ip, row.mac, row.state) == ("fd77::100", "52:54:00:12:34:56", "bound")
    assert row.client_id.startswith("duid:0004")
    assert rig.server.identities["52:54:00:12:34:56"][0] == "eui-64"


def test_small_pool_survives_ovmf_taking_and_releasing_leases(tmp_path: Path) -> None:
    """OVMF's boot takes three leases under different IAIDs and releases two: a pool of
    three serves boot after boot."""
    rig = make_rig(tmp_path)
    for _boot in range(4):
        rig.reactor.advance(30)  # a boot takes longer than the rate limit's window
        held = []
        for iaid in (1, 2, 3):
            reply = rig.one(request_of(rig.one(ovmf(p6.SOLICIT, ia(iaid)))))
            [address] = addresses(reply)
            held.append((iaid, address))
        for iaid, address in held[:2]:
            done = rig.one(ovmf(p6.RELEASE, (p6.SERVERID, SERVER_DUID), ia(iaid, address)))
            assert p6.parse_u16_list(done.option(p6.STATUS_CODE)[:2] or b"\0\0") == (0,)
        rig.one(ovmf(p6.RELEASE, (p6.SERVERID, SERVER_DUID), ia(3, held[2][1])))


def test_same_client_same_address_after_restart(tmp_path: Path) -> None:
    """A new server process over the same store gives the client its address back."""
    rig = make_rig(tmp_path)
    first = addresses(rig.one(request_of(rig.one(plain(p6.SOLICIT, ia(9))), plain)))
    rig.store.close()
    again = make_rig(tmp_path)
    assert addresses(again.one(plain(p6.SOLICIT, ia(9)))) == first
    other = addresses(again.one(ovmf(p6.SOLICIT, ia(9))))
    assert other != first


def test_rapid_commit_binds_at_once(tmp_path: Path) -> None:
    """Solicit with Rapid Commit: a Reply with the option, the lease stored."""
    rig = make_rig(tmp_path)
    reply = rig.one(plain(p6.SOLICIT, ia(1), (p6.RAPID_COMMIT, b"")))
    assert reply.msg_type == p6.REPLY and reply.option(p6.RAPID_COMMIT) == b""
    assert [r.ip for r in rig.store.leases_now()] == addresses(reply)
    assert reply.option(p6.BOOTFILE_URL) is None  # not a boot client


def test_renew_rebind_and_no_binding(tmp_path: Path) -> None:
    """Renew/Rebind extend a held address; Renew of an address held by nobody is
    NoBinding, and Rebind of an address off the link gets lifetime 0."""
    rig = make_rig(tmp_path)
    [address] = addresses(rig.one(request_of(rig.one(plain(p6.SOLICIT, ia(1))), plain)))
    renew = rig.one(plain(p6.RENEW, (p6.SERVERID, SERVER_DUID), ia(1, address)))
    assert addresses(renew) == [address]
    assert addresses(rig.one(plain(p6.REBIND, ia(1, address)))) == [address]
    taken = rig.one(ovmf(p6.RENEW, (p6.SERVERID, SERVER_DUID), ia(1, address)))
    [body] = taken.all(p6.IA_NA)
    assert p6.parse_ia_na(body).options[0][1][:2] == b"\0\3"
    off = rig.one(plain(p6.REBIND, ia(1, "2001:db8::5")))
    [body] = off.all(p6.IA_NA)
    [gone] = p6.parse_ia_na(body).addresses
    assert (str(gone.address), gone.valid) == ("2001:db8::5", 0)


def test_decline_quarantines_and_confirm_checks_the_link(tmp_path: Path) -> None:
    """Decline takes the address out of the pool; Confirm says Success on the link,
    NotOnLink off it."""
    rig = make_rig(tmp_path)
    [address] = addresses(rig.one(request_of(rig.one(plain(p6.SOLICIT, ia(1))), plain)))
    rig.one(plain(p6.DECLINE, (p6.SERVERID, SERVER_DUID), ia(1, address)))
    assert address not in addresses(rig.one(ovmf(p6.SOLICIT, ia(5))))
    ok = rig.one(plain(p6.CONFIRM, ia(1, "fd77::101")))
    assert ok.option(p6.STATUS_CODE)[:2] == b"\0\0"
    bad = rig.one(plain(p6.CONFIRM, ia(1, "2001:db8::1")))
    assert bad.option(p6.STATUS_CODE)[:2] == b"\0\4"


def test_pool_exhaustion_says_no_addrs_avail(tmp_path: Path) -> None:
    """With the pool bound, a new client's IA gets NoAddrsAvail, not someone's address."""
    rig = make_rig(tmp_path)
    for iaid in range(3):
        rig.one(plain(p6.SOLICIT, ia(iaid), (p6.RAPID_COMMIT, b"")))
    reply = rig.one(ovmf(p6.SOLICIT, ia(1)))
    assert addresses(reply) == []
    [body] = reply.all(p6.IA_NA)
    assert p6.parse_ia_na(body).options[0][1][:2] == b"\0\2"


def test_request_for_another_server_is_ignored(tmp_path: Path) -> None:
    """A Request naming another server's DUID gets no answer."""
    rig = make_rig(tmp_path)
    assert rig.send(ovmf(p6.REQUEST, (p6.SERVERID, b"\0\3\0\1" + bytes(6)), ia(1))) == []


def test_ipxe_information_request_gets_the_boot_script(tmp_path: Path) -> None:
    """iPXE (user class iPXE) gets http://[addr]:port/pxe/boot.ipxe: the loop-break."""
    for mode in ("full", "stateless"):
        rig = make_rig(tmp_path / mode, mode)
        reply = rig.one(ipxe(p6.INFORMATION_REQUEST))
        assert reply.msg_type == p6.REPLY
        assert reply.option(p6.BOOTFILE_URL) == f"{BASE}/pxe/boot.ipxe".encode()
        assert reply.all(p6.IA_NA) == []


def test_http_client_gets_url_and_vendor_class_echoed(tmp_path: Path) -> None:
    """HTTPv6 boot: option 16 (343, HTTPClient) and an http://[addr]:port URL."""
    rig = make_rig(tmp_path)
    advertise = rig.one(ovmf(p6.SOLICIT, ia(1), http=True))
    assert advertise.option(p6.BOOTFILE_URL) == f"{BASE}/files/ipxe.efi".encode()
    assert p6.parse_vendor_class(advertise.option(p6.VENDOR_CLASS) or b"") == (
        343, (b"HTTPClient",))


def test_stateless_answers_boot_clients_only_without_addresses(tmp_path: Path) -> None:
    """Stateless: OVMF's Solicit gets an Advertise with no IA_NA, vendor class PXEClient
    and option 59; a plain client and Requests for the site server get nothing."""
    rig = make_rig(tmp_path, "stateless")
    advertise = rig.one(ovmf(p6.SOLICIT, ia(1)))
    assert advertise.all(p6.IA_NA) == []
    assert p6.parse_vendor_class(advertise.option(p6.VENDOR_CLASS) or b"") == (
        343, (b"PXEClient",))
    assert advertise.option(p6.BOOTFILE_URL) == b"tftp://[fd77::1]/ipxe.efi"
    assert rig.send(plain(p6.SOLICIT, ia(1))) == []
    assert rig.send(plain(p6.INFORMATION_REQUEST)) == []
    assert rig.send(ovmf(p6.REQUEST, (p6.SERVERID, b"\0\3\0\1" + bytes(6)), ia(1))) == []


def test_boot_server_port_answers_ovmf_request(tmp_path: Path) -> None:
    """Port 4011: OVMF's Request (to the URL's host) gets a Reply with option 59."""
    rig = make_rig(tmp_path, "stateless")
    rig.server.boot_server = True
    reply = rig.one(ovmf(p6.REQUEST, (p6.SERVERID, b"\0\3\0\1" + bytes(6))))
    assert reply.msg_type == p6.REPLY
    assert reply.option(p6.BOOTFILE_URL) == b"tftp://[fd77::1]/ipxe.efi"


def test_relayed_solicit_goes_back_wrapped_with_option_79_mac(tmp_path: Path) -> None:
    """Nested Relay-Forw: the Reply is wrapped in Relay-Repl per hop (Interface-Id
    echoed), sent to the relay; the MAC comes from option 79."""
    rig = make_rig(tmp_path)
    inner = Relay6(p6.RELAY_FORW, 0, IPv6Address("fd77::fe"), IPv6Address("fe80::1"),
                   ovmf(p6.SOLICIT, ia(1), (p6.RAPID_COMMIT, b"")),
                   ((p6.CLIENT_LINKLAYER, b"\0\1" + bytes.fromhex("0a0b0c0d0e0f")),
                    (p6.INTERFACE_ID, b"port7")))
    outer = Relay6(p6.RELAY_FORW, 1, IPv6Address("fd78::1"), IPv6Address("fd77::fe"), inner)
    [(reply, where)] = rig.send(outer, ("fd78::1", 547))
    assert where == ("fd78::1", 547)
    assert isinstance(reply, Relay6) and reply.msg_type == p6.RELAY_REPL
    assert isinstance(reply.message, Relay6) and reply.message.options == (
        (p6.INTERFACE_ID, b"port7"),)
    assert isinstance(reply.message.message, Message6)
    assert rig.store.leases_now()[0].mac == "0a:0b:0c:0d:0e:0f"
    assert rig.server.identities["0a:0b:0c:0d:0e:0f"][0] == "option-79"


def test_duid_ll_gives_the_mac(tmp_path: Path) -> None:
    """A DUID-LL names the machine even from a global source address."""
    rig = make_rig(tmp_path)
    rig.send(plain(p6.SOLICIT, ia(1)), ("fd77::99", 546))
    assert rig.server.identities["52:54:00:00:be:ef"] == ("duid-ll", LL_DUID.hex())


@pytest.mark.parametrize("message", [
    Message6(p6.SOLICIT, 1),                                       # no client id
    Message6(p6.REPLY, 1, ((p6.CLIENTID, LL_DUID),)),              # a server's message
    plain(p6.SOLICIT, (p6.SERVERID, SERVER_DUID)),                 # Solicit with server id
    plain(p6.SOLICIT, (p6.IA_NA, b"short")),                       # malformed IA_NA
])
def test_bad_messages_are_dropped_and_counted(tmp_path: Path, message: Message6) -> None:
    """Malformed or misdirected messages: no reply, counted, nothing raised."""
    rig = make_rig(tmp_path)
    before = sum(DHCP_DROPPED.labels(reason=r)._value.get()
                 for r in ("malformed", "unexpected-type", "bad-request"))
    assert rig.send(message) == []
    after = sum(DHCP_DROPPED.labels(reason=r)._value.get()
                for r in ("malformed", "unexpected-type", "bad-request"))
    assert after == before + 1


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_garbage_through_the_protocol_raises_nothing(tmp_path: Path, data: bytes) -> None:
    """Random datagrams into the protocol (full mode): nothing raised, and whatever is
    sent is a server's message (a reply to what happened to decode as a request)."""
    rig = make_rig(tmp_path / uuid.uuid4().hex)
    rig.protocol.datagramReceived(data, (LINK_LOCAL, 546))
    rig.reactor.advance(0)
    for sent, _ in rig.transport.written:
        assert p6.parse(sent).msg_type in (p6.ADVERTISE, p6.REPLY, p6.RELAY_REPL)
    rig.store.close()


def test_no_address_advertised_while_the_store_cannot_commit(tmp_path: Path) -> None:
    """Issue 16: while the shared state's database is away an Advertise carries no address
    (NoAddrsAvail: the Reply to its Request could not follow); once back, it does."""
    store = AwayableStore(tmp_path / "state.sqlite")
    rig = make_rig(tmp_path, store=store)
    store.away = True
    advertise = rig.one(ovmf(p6.SOLICIT, ia(1)))
    assert addresses(advertise) == []
    [body] = advertise.all(p6.IA_NA)
    assert b"state unavailable" in body
    store.away = False
    assert addresses(rig.one(ovmf(p6.SOLICIT, ia(1)))) == ["fd77::100"]
