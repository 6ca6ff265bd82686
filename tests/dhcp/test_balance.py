"""Active-active DHCP: RFC 3074 hash buckets, the split between peers, takeover of a
silent peer's buckets, and two servers on one PostgreSQL state answering each client once."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.config import ConfigError, load_text
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.balance import MIXING_TABLE, Balancer, bucket_of, rfc3074_hash
from pxetwist.store_postgres import PostgresStore
from tests.dhcp.clients import ipxe_rom, plain
from tests.dhcp.test_server import make_rig

A, B, C = IPv4Address("10.77.0.1"), IPv4Address("10.77.0.2"), IPv4Address("10.77.0.3")


def test_mixing_table_is_a_permutation() -> None:
    """RFC 3074's mixing table holds each byte value 0-255 exactly once."""
    assert sorted(MIXING_TABLE) == list(range(256))
    assert (MIXING_TABLE[0], MIXING_TABLE[1], MIXING_TABLE[255]) == (251, 175, 151)


@pytest.mark.parametrize(("key", "expected"), [
    # computed by ISC dhcpd's loadb_p_hash (RFC 3074 section 6's reference code) in C
    (bytes.fromhex("525400123456"), 156),
    (bytes.fromhex("01525400123456"), 253),
    (bytes(6), 254),
    (b"\xff" * 6, 79),
    (bytes.fromhex("000c29abcdef"), 60),
    (b"", 0),
])
def test_rfc3074_hash_vectors(key: bytes, expected: int) -> None:
    """The load-balancing hash gives the values ISC dhcpd's own function gives for the same keys."""
    assert rfc3074_hash(key) == expected


def test_bucket_uses_the_client_id_else_the_hardware_address() -> None:
    """A client's bucket hashes its client id (option 61) when it sends one, else its MAC."""
    with_id = ipxe_rom(opt.DISCOVER, options=[(opt.CLIENT_ID, b"\x01\x52\x54\x00\x12\x34\x56")])
    assert bucket_of(with_id) == 253
    without_id = plain(opt.DISCOVER, mac="52:54:00:12:34:56")
    assert without_id.option(opt.CLIENT_ID) is None and bucket_of(without_id) == 156


@given(st.lists(st.integers(1, 250), min_size=1, max_size=5, unique=True),
       st.data())
def test_every_bucket_has_exactly_one_live_server(hosts: list[int], data: Any) -> None:
    """Whatever peers are alive, each of the 256 buckets is served by exactly one live peer."""
    peers = [IPv4Address(f"10.0.0.{h}") for h in hosts]
    down = data.draw(st.sets(st.sampled_from(peers), max_size=len(peers) - 1))
    balancers = [Balancer(peers, me) for me in peers]
    for balancer in balancers:
        balancer.set_alive([p for p in peers if p not in down])
    live = [b for b in balancers if b.me not in down]
    for bucket in range(256):
        servers = {b.server_of(bucket) for b in live}
        assert len(servers) == 1 and servers.pop() not in down
        owner = sorted(peers)[bucket % len(peers)]
        if owner not in down:  # a live owner keeps its buckets
            assert live[0].server_of(bucket) == owner


def test_two_peers_split_the_buckets_and_one_takes_over() -> None:
    """Two peers split the buckets; when one is down the other serves all of them."""
    one, two = Balancer([A, B], A), Balancer([B, A], B)
    mine = [b for b in range(256) if one.server_of(b) == A]
    assert len(mine) == 128 and all(two.server_of(b) == B for b in range(256)
                                    if b not in mine)
    two.set_alive([B])
    assert all(two.server_of(b) == B for b in range(256)) and two.taken_over() == (A,)
    two.set_alive([A, B])
    assert two.taken_over() == ()


def test_peers_config_is_checked(tmp_path: Path) -> None:
    """[dhcp] peers needs a PostgreSQL state and this server among the peers; peer_timeout is
    read."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir()
    base = "[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n"
    with pytest.raises(ConfigError, match=r"\[dhcp\] peers.*shared state"):
        load_text(base + "[dhcp]\npeers = 10.0.0.1, 10.0.0.2\n", tmp_path)
    url = "postgresql://pxe@/pxe?host=/run/postgresql"
    with pytest.raises(ConfigError, match="not among them"):
        load_text(base + f"[server]\naddress = 10.0.0.9\nstate = {url}\n"
                  "[dhcp]\npeers = 10.0.0.1, 10.0.0.2\n", tmp_path)
    config = load_text(base + f"[server]\naddress = 10.0.0.2\nstate = {url}\n"
                       "[dhcp]\npeers = 10.0.0.2,10.0.0.1\npeer_timeout = 3\n", tmp_path)
    assert config.dhcp.peers == (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))
    assert config.dhcp.peer_timeout == 3


def peer_rigs(tmp_path: Path, url: str, mode: str = "full") -> list[Any]:
    """Servers A and B sharing the pool and the database at ``url``."""
    return [make_rig(tmp_path / str(me), mode=mode, server=str(me), store=PostgresStore(url),
                     server_extra=f"state = {url}\n",
                     dhcp_extra=f"peers = {A}, {B}\npeer_timeout = 1\n")
            for me in (A, B)]


MACS = [f"52:54:00:00:02:{n:02x}" for n in range(24)]


def answers(rig: Any, mac: str) -> int:
    return len(rig.send(ipxe_rom(opt.DISCOVER, mac=mac)))


def test_each_client_is_answered_by_one_peer_until_its_peer_falls_silent(
    tmp_path: Path, pg_cluster: Any
) -> None:
    """Two servers on one database: a DISCOVER gets one OFFER, from the server of its
    bucket; once B's heartbeat is older than peer_timeout, A answers B's clients too, and
    B's clients go back to B when it beats again. (The pool has 4 addresses: 2 clients
    of each server.)"""
    url = pg_cluster.new_database()
    one, two = peer_rigs(tmp_path, url)
    for rig in (one, two):
        rig.service.startService()  # the first heartbeat
    one.reactor.advance(1.0)  # A's next beat sees B's
    split = Balancer([A, B], A)
    owned = {me: [m for m in MACS if split.server_of(bucket_of(ipxe_rom(
        opt.DISCOVER, mac=m))) == me][:2] for me in (A, B)}
    assert all(len(macs) == 2 for macs in owned.values())
    assert [(answers(one, m), answers(two, m)) for m in owned[A] + owned[B]] == \
        [(1, 0)] * 2 + [(0, 1)] * 2
    two.service.stopService()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # B silent for 5 s
        conn.execute("UPDATE peers SET beat = beat - 5 WHERE server = %s", (str(B),))
    one.reactor.advance(61.0)  # A's next heartbeats read the rows; its offers run out
    assert [answers(one, m) for m in owned[B]] == [1, 1]
    two.service.startService()
    one.reactor.advance(1.0)
    assert [answers(one, m) for m in owned[B]] == [0, 0]
    for rig in (one, two):
        rig.service.stopService()
        rig.store.close()


def test_proxies_answer_every_client(tmp_path: Path, pg_cluster: Any) -> None:
    """proxyDHCP hands out no address: with peers, both alive and beating (so full mode
    would split the clients between them, as the test above shows), each proxy still
    answers everyone."""
    url = pg_cluster.new_database()
    one, two = peer_rigs(tmp_path, url, mode="proxy")
    for rig in (one, two):
        rig.service.startService()
    one.reactor.advance(1.0)
    two.reactor.advance(1.0)
    split = Balancer([A, B], A)
    buckets = {split.server_of(bucket_of(ipxe_rom(opt.DISCOVER, mac=m))) for m in MACS[:8]}
    assert buckets == {A, B}  # the clients fall in both servers' buckets
    assert all(answers(one, mac) == answers(two, mac) == 1 for mac in MACS[:8])
    for rig in (one, two):
        rig.service.stopService()
        rig.store.close()


#: Options besides the message type (a second one of which comes from the last line).
_OPTION = st.one_of(
    st.tuples(st.just(opt.SERVER_ID),
              st.one_of(st.sampled_from([A.packed, B.packed, C.packed]), st.binary(max_size=6))),
    st.tuples(st.just(opt.CLIENT_ID), st.binary(max_size=20)),
    st.tuples(st.integers(1, 254), st.binary(max_size=12)),
)


def full_path_says_peers(balancer: Balancer, data: bytes) -> bool:
    """What the decoding path decides: a DISCOVER of another server's bucket, or a
    REQUEST of such a client naming another server."""
    from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacketError, parse

    try:
        packet = parse(data)
    except DhcpPacketError:
        return False
    kind = opt.message_type(packet)
    if packet.op != BOOTREQUEST or kind not in (opt.DISCOVER, opt.REQUEST):
        return False
    if kind == opt.REQUEST and opt.server_id(packet) in (None, balancer.me):
        return False
    return not balancer.serves(packet)


@settings(max_examples=400)
@given(me=st.sampled_from([A, B]), hlen=st.sampled_from([6, 6, 0, 16, 17]),
       op=st.sampled_from([1, 1, 1, 2]), chaddr=st.binary(min_size=16, max_size=16),
       kind=st.sampled_from([opt.DISCOVER, opt.REQUEST, opt.DISCOVER, opt.REQUEST, opt.INFORM]),
       options=st.lists(_OPTION, max_size=5), at=st.integers(0, 5),
       cut=st.one_of(st.none(), st.none(), st.integers(0, 400)),
       garbage=st.binary(max_size=40), end=st.sampled_from([True, True, False]))
def test_screening_undecoded_datagrams_agrees_with_decoding_them(
    me: IPv4Address, hlen: int, op: int, chaddr: bytes, kind: int,
    options: list[tuple[int, bytes]], at: int, cut: int | None, garbage: bytes, end: bool,
) -> None:
    """A datagram read as a peer's without decoding is one the decoding path drops as a
    peer's too; and a well-formed one it drops is screened out. Arbitrary options, repeated
    ones, short or cut datagrams, trailing garbage."""
    import struct

    from pxetwist.dhcp.packet import MAGIC

    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, hlen, 0, 7, 0, 0, bytes(4),
                         bytes(4), bytes(4), bytes(4), chaddr, bytes(64), bytes(128))
    options.insert(at, (opt.MESSAGE_TYPE, bytes((kind,))))
    body = b"".join(bytes((code, len(value))) + value for code, value in options)
    data = header + MAGIC + body + (b"\xff" if end else b"") + garbage
    whole = cut is None or cut >= len(data)
    data = data if whole else data[:cut]
    balancer = Balancer([A, B], me)
    screened = balancer.peers_message(data)
    if screened is not None:
        assert full_path_says_peers(balancer, data)
    codes = [code for code, _ in options]
    well_formed = (end and whole and len(codes) == len(set(codes)) and op == 1
                   and hlen <= 16 and 52 not in codes)
    if well_formed and full_path_says_peers(balancer, data):
        assert screened is not None


def test_a_peers_clients_are_counted_and_never_decoded(tmp_path: Path, pg_cluster: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With peers, the other server's DISCOVERs and the REQUESTs naming it are counted as
    received and dropped without being decoded; this server's own are answered."""
    from pxetwist.dhcp import protocol
    from pxetwist.metrics import DHCP_DROPPED, DHCP_PACKETS

    url = pg_cluster.new_database()
    one, _ = peer_rigs(tmp_path, url)
    split = Balancer([A, B], A)
    theirs = [m for m in MACS if split.server_of(bucket_of(ipxe_rom(
        opt.DISCOVER, mac=m))) == B][:3]
    decoded: list[bytes] = []
    parse = protocol.parse

    def counted(data: bytes) -> Any:
        decoded.append(data)
        return parse(data)

    monkeypatch.setattr(protocol, "parse", counted)
    dropped = DHCP_DROPPED.labels(reason="peer-bucket")._value.get()
    discovers = DHCP_PACKETS.labels(type="DISCOVER")._value.get()
    for mac in theirs:
        assert one.send(ipxe_rom(opt.DISCOVER, mac=mac)) == []
        assert one.send(ipxe_rom(opt.REQUEST, mac=mac, options=[
            (opt.SERVER_ID, B.packed), (opt.REQUESTED_IP, bytes((10, 77, 0, 101)))])) == []
    assert decoded == []
    assert DHCP_DROPPED.labels(reason="peer-bucket")._value.get() == dropped + 6
    assert DHCP_PACKETS.labels(type="DISCOVER")._value.get() == discovers + 3
    mine = next(m for m in MACS if split.server_of(bucket_of(ipxe_rom(
        opt.DISCOVER, mac=m))) == A)
    assert len(one.send(ipxe_rom(opt.DISCOVER, mac=mine))) == 1 and len(decoded) == 1
    one.store.close()
