"""The ini file (``etc/pxe.ini``) read into frozen attrs objects.

Every problem is a :class:`ConfigError` whose message is one line naming the
file, the section, the key and what is wrong, so that a typo stops the server
before anything binds instead of being silently ignored.
"""

from __future__ import annotations

import configparser
import ipaddress
import os.path
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from attrs import evolve, field, frozen

from pxetwist.arch import is_boot_files_key

T = TypeVar("T")


class ConfigError(Exception):
    """A config problem; ``str()`` is the one line shown to the operator."""


#: Every section and key the file may hold, with the default value (as ini text).
DEFAULTS: dict[str, dict[str, str]] = {
    "server": {"address": "", "interface": "", "state": "../var/pxetwist.sqlite"},
    "dhcp": {
        "mode": "proxy",
        "port": "67",
        "proxy_port": "4011",
        "range_start": "",
        "range_end": "",
        "netmask": "255.255.255.0",
        "router": "",
        "dns": "",
        "domain": "",
        "lease_time": "3600",
        "reply_delay": "0",
        "peers": "",
        "peer_timeout": "5",
    },
    "tftp": {
        "enabled": "yes",
        "port": "69",
        "address": "",
        "root": "../tftproot",
        "ipxe_dir": "/usr/lib/ipxe",
        "max_blksize": "65464",
        "max_windowsize": "64",
        "max_sessions": "1000",
        "max_sessions_per_client": "32",
        "stall_timeout": "120",
    },
    "http": {"port": "8080", "interface": "", "public_url": "", "api_token": ""},
    "catalog": {"paths": "../catalog", "rescan_interval": "60", "pxe_default": "yes"},
    "boot": {"unknown": "local", "menu_timeout": "10", "api_url": "", "max_machines": "10000",
             "efi_loader": "ipxe", "shim_second_stage": "grub", "shim_dir": "/usr/lib/shim",
             "grub_dir": "/usr/lib/grub"},
    "dhcp6": {
        "mode": "off",
        "interface": "",
        "address": "",
        "range_start": "",
        "range_end": "",
        "lease_time": "3600",
        "preferred_lifetime": "1800",
        "dns": "",
    },
}

#: Sections whose keys are data (MACs, architectures), not fixed names.
OPEN_SECTIONS: tuple[str, ...] = ("dhcp.reservations", "boot.files")

#: Only what Debian's ``ipxe`` package ships in /usr/lib/ipxe: its ``ipxe.efi`` is an
#: x86-64 build, so ia32 and ARM UEFI get no loader unless configured.
DEFAULT_BOOT_FILES: dict[str, str] = {
    "bios": "undionly.kpxe",
    "uefi-x64": "ipxe.efi",
    "default": "undionly.kpxe",
}

#: A base URL that can be written into an iPXE script as it is: no ``$``, braces,
#: spaces, ``&``, ``|``, ``;``, ``#``, quotes or ``?`` (paths are appended to it).
_SCRIPT_SAFE_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/%@\[\]+,=]+")

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")


def normalise_mac(text: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for a MAC written with ``:`` or ``-`` (any case), else ``None``."""
    text = text.strip().lower()
    if not _MAC_RE.match(text):
        return None
    return text.replace("-", ":")


@frozen
class ServerConfig:
    """``[server]``: who we are on the network.

    :ivar address: the IPv4 address clients reach us at; ``None`` = read it from ``interface``.
    :ivar interface: the interface DHCP binds to; ``""`` = all.
    :ivar state: the SQLite state file; with ``database``, only its folder is used (for
        files this server makes, such as Secure Boot images).
    :ivar database: the ``postgresql://`` URL ``state`` names instead of a file (several
        servers sharing one state), or ``""``; it may hold a password: never log it.
    """

    address: IPv4Address | None
    interface: str
    state: Path
    database: str = ""


@frozen
class DhcpConfig:
    """``[dhcp]`` and ``[dhcp.reservations]``.

    :ivar mode: ``proxy``, ``full`` or ``off``.
    :ivar reply_delay: milliseconds to wait before each reply.
    :ivar reservations: MAC (``aa:bb:..``) -> fixed address.
    :ivar peers: the server identifiers of every server sharing the pool (this one
        included), sorted; ``()``: this server alone. Each answers the DISCOVERs of its
        RFC 3074 hash buckets (:mod:`pxetwist.dhcp.balance`).
    :ivar peer_timeout: seconds after which a peer's silent heartbeat counts as down.
    """

    mode: str
    port: int
    proxy_port: int
    range_start: IPv4Address | None
    range_end: IPv4Address | None
    netmask: IPv4Address
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    domain: str
    lease_time: int
    reply_delay: int
    reservations: Mapping[str, IPv4Address] = field(factory=dict, hash=False)
    peers: tuple[IPv4Address, ...] = ()
    peer_timeout: int = 5


@frozen
class TftpConfig:
    """``[tftp]``: the TFTP server and where its files come from."""

    enabled: bool
    port: int
    address: str
    root: Path
    ipxe_dir: Path
    max_blksize: int
    max_windowsize: int
    max_sessions: int
    max_sessions_per_client: int
    stall_timeout: int


@frozen
class HttpConfig:
    """``[http]``: the Klein app's listener and the URL written into scripts.

    :ivar public_url: base URL without a trailing ``/``; ``""`` = ``http://ADDRESS:PORT``.
    :ivar api_token: bearer token for mutations; ``""`` = mutations from loopback only.
    """

    port: int
    interface: str
    public_url: str
    api_token: str


@frozen
class CatalogConfig:
    """``[catalog]``: where boot entries are found and how often they are rescanned."""

    paths: tuple[Path, ...]
    rescan_interval: int
    pxe_default: bool


@frozen
class BootConfig:
    """``[boot]`` and ``[boot.files]``.

    :ivar unknown: ``local`` or ``menu``: what an unassigned machine gets.
    :ivar max_machines: machine records nobody configured kept at most (anyone can make
        one by asking for a boot script); beyond, the one seen longest ago is forgotten.
    :ivar files: architecture name or option-93 code (as text), or ``default`` ->
        boot file name or URL.
    :ivar efi_loader: ``ipxe`` or ``shim``: what UEFI x64 and arm64 clients are sent
        first (``shim``: the Microsoft-signed chain, for Secure Boot; :mod:`pxetwist.signed`).
    :ivar shim_second_stage: ``grub`` or ``ipxe``: what that shim loads.
    :ivar shim_dir: where ``shimx64.efi``/``shimaa64.efi`` are found (Debian's
        ``shim-signed``: ``/usr/lib/shim``).
    :ivar grub_dir: where the signed network GRUB is found (Debian's
        ``grub-efi-*-signed``: ``/usr/lib/grub``).
    """

    unknown: str
    menu_timeout: int
    api_url: str
    max_machines: int = 10_000
    efi_loader: str = "ipxe"
    shim_second_stage: str = "grub"
    shim_dir: Path = Path("/usr/lib/shim")
    grub_dir: Path = Path("/usr/lib/grub")
    files: Mapping[str, str] = field(factory=dict, hash=False)


@frozen
class Dhcp6Config:
    """``[dhcp6]``: DHCPv6 (RFC 8415) with the RFC 5970 boot options.

    :ivar mode: ``off``, ``stateless`` (boot options only, the IPv6 counterpart of proxy
        mode) or ``full`` (addresses from the pool too).
    :ivar interface: the interface it listens on; ``""`` = ``[server] interface``.
    :ivar address: our IPv6 address written into URLs; ``None`` = the interface's first
        global address.
    :ivar range_start: full mode's first pool address (the pool's /64 is the link).
    :ivar preferred_lifetime: seconds; ``lease_time`` is the valid lifetime.
    """

    mode: str = "off"
    interface: str = ""
    address: IPv6Address | None = None
    range_start: IPv6Address | None = None
    range_end: IPv6Address | None = None
    lease_time: int = 3600
    preferred_lifetime: int = 1800
    dns: tuple[IPv6Address, ...] = ()


@frozen
class Config:
    """The whole configuration. :ivar path: the file it came from (``None`` if built in code)."""

    path: Path | None
    server: ServerConfig
    dhcp: DhcpConfig
    tftp: TftpConfig
    http: HttpConfig
    catalog: CatalogConfig
    boot: BootConfig
    dhcp6: Dhcp6Config = field(factory=Dhcp6Config)

    def base_url(self, fallback_address: str = "127.0.0.1") -> str:
        """The base URL iPXE is told to fetch from (no trailing ``/``)."""
        if self.http.public_url:
            return self.http.public_url
        address = str(self.server.address) if self.server.address else fallback_address
        return f"http://{address}:{self.http.port}"


class _Reader:
    """Reads typed values from a parsed ini, naming file/section/key in every error."""

    def __init__(self, parser: configparser.RawConfigParser, source: str, folder: Path,
                 overridden: Mapping[tuple[str, str], str] | None = None) -> None:
        self._parser = parser
        self._source = source
        self._folder = folder
        self._overridden = overridden or {}

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        """The error for one key, blaming the ``--set`` argument that gave its value, if
        one did, else the file."""
        given = self._overridden.get((section, key))
        source = f"--set {given}" if given is not None else self._source
        return ConfigError(f"{source}: [{section}] {key}: {problem}")

    def raw(self, section: str, key: str) -> str:
        if self._parser.has_option(section, key):
            return self._parser.get(section, key).strip()
        return DEFAULTS[section][key]

    def convert(self, section: str, key: str, convert: Callable[[str], T], what: str) -> T:
        text = self.raw(section, key)
        try:
            return convert(text)
        except ValueError:
            raise self.error(section, key, f"{text!r} is not {what}") from None

    def integer(self, section: str, key: str, low: int, high: int) -> int:
        value = self.convert(section, key, int, "a whole number")
        if not low <= value <= high:
            raise self.error(section, key, f"{value} is out of range ({low}..{high})")
        return value

    def port(self, section: str, key: str) -> int:
        return self.integer(section, key, 0, 65535)

    def boolean(self, section: str, key: str) -> bool:
        text = self.raw(section, key).lower()
        if text in ("yes", "true", "on", "1"):
            return True
        if text in ("no", "false", "off", "0"):
            return False
        raise self.error(section, key, f"{text!r} is not yes or no")

    def choice(self, section: str, key: str, choices: Iterable[str]) -> str:
        text = self.raw(section, key).lower()
        options = tuple(choices)
        if text not in options:
            raise self.error(section, key, f"{text!r} is not one of {', '.join(options)}")
        return text

    def address(self, section: str, key: str) -> IPv4Address | None:
        text = self.raw(section, key)
        if not text:
            return None
        return self.convert(section, key, IPv4Address, "an IPv4 address")

    def addresses(self, section: str, key: str) -> tuple[IPv4Address, ...]:
        text = self.raw(section, key)
        parts = [p.strip() for p in text.split(",") if p.strip()]
        result = []
        for part in parts:
            try:
                result.append(IPv4Address(part))
            except ValueError:
                raise self.error(section, key, f"{part!r} is not an IPv4 address") from None
        return tuple(result)

    def path(self, section: str, key: str, text: str | None = None) -> Path:
        text = self.raw(section, key) if text is None else text
        if not text:
            raise self.error(section, key, "a path is required")
        if "\0" in text:
            raise self.error(section, key, "a path cannot contain a NUL byte")
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~user with no such user
            raise self.error(section, key, f"{text!r}: no such user's home folder") from None
        if not path.is_absolute():
            path = self._folder / path
        return Path(os.path.normpath(path))

    def folder(self, section: str, key: str, text: str | None = None) -> Path:
        path = self.path(section, key, text)
        try:
            exists = path.is_dir()
        except (OSError, ValueError) as e:  # name too long, NUL byte, ...
            reason = getattr(e, "strerror", None) or str(e)
            raise self.error(section, key, f"folder {str(path)!r} cannot be used: {reason}"
                             ) from None
        if not exists:
            raise self.error(section, key, f"folder {str(path)!r} does not exist")
        return path

    def url(self, section: str, key: str) -> str:
        text = self.raw(section, key).rstrip("/")
        if text:
            parsed = urlparse(text)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise self.error(section, key, f"{text!r} is not an http:// or https:// URL")
        return text


def _server(r: _Reader) -> ServerConfig:
    interface = r.raw("server", "interface")
    if interface and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", interface):
        raise r.error("server", "interface", f"{interface!r} is not an interface name")
    if interface:
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise r.error("server", "interface",
                          f"no network interface {interface!r} on this machine") from None
    state = r.raw("server", "state")
    database = state if state.startswith(("postgresql://", "postgres://")) else ""
    return ServerConfig(
        address=r.address("server", "address"),
        interface=interface,
        state=r.path("server", "state", DEFAULTS["server"]["state"] if database else None),
        database=database,
    )


def _dhcp(r: _Reader, parser: configparser.RawConfigParser) -> DhcpConfig:
    mode = r.choice("dhcp", "mode", ("proxy", "full", "off"))
    netmask = r.convert("dhcp", "netmask", IPv4Address, "an IPv4 netmask")
    try:
        IPv4Network(f"0.0.0.0/{netmask}")
    except ValueError:
        raise r.error("dhcp", "netmask", f"{str(netmask)!r} is not a netmask") from None
    start = r.address("dhcp", "range_start")
    end = r.address("dhcp", "range_end")
    if mode == "full":
        if start is None:
            raise r.error("dhcp", "range_start", "full mode needs a pool (range_start)")
        if end is None:
            raise r.error("dhcp", "range_end", "full mode needs a pool (range_end)")
    if start is not None and end is not None:
        if end < start:
            raise r.error("dhcp", "range_end", f"{end} comes before range_start {start}")
        network = IPv4Network(f"{start}/{netmask}", strict=False)
        if end not in network:
            raise r.error(
                "dhcp", "range_end", f"{end} is outside {network} (range_start/netmask)"
            )
    reservations: dict[str, IPv4Address] = {}
    if parser.has_section("dhcp.reservations"):
        for key, value in parser.items("dhcp.reservations"):
            mac = normalise_mac(key)
            if mac is None:
                raise r.error("dhcp.reservations", key, "is not a MAC address")
            try:
                reservations[mac] = IPv4Address(value.strip())
            except ValueError:
                raise r.error(
                    "dhcp.reservations", key, f"{value.strip()!r} is not an IPv4 address"
                ) from None
            _check_reservation(r, key, reservations[mac], start, netmask)
    return DhcpConfig(
        mode=mode,
        port=r.port("dhcp", "port"),
        proxy_port=r.port("dhcp", "proxy_port"),
        range_start=start,
        range_end=end,
        netmask=netmask,
        router=r.address("dhcp", "router"),
        dns=r.addresses("dhcp", "dns"),
        domain=r.raw("dhcp", "domain"),
        lease_time=r.integer("dhcp", "lease_time", 60, 2**31 - 1),
        reply_delay=r.integer("dhcp", "reply_delay", 0, 10_000),
        reservations=reservations,
        peers=_peers(r),
        peer_timeout=r.integer("dhcp", "peer_timeout", 1, 3600),
    )


def _peers(r: _Reader) -> tuple[IPv4Address, ...]:
    """``[dhcp] peers``: only with a shared (PostgreSQL) state, this server among them."""
    peers = r.addresses("dhcp", "peers")
    if not peers:
        return ()
    if len(set(peers)) != len(peers):
        raise r.error("dhcp", "peers", "a server is listed twice")
    if not r.raw("server", "state").startswith(("postgresql://", "postgres://")):
        raise r.error("dhcp", "peers", "servers sharing a pool need a shared state:"
                      " [server] state = a postgresql:// URL")
    address = r.raw("server", "address")
    if address and IPv4Address(address) not in peers:
        raise r.error("dhcp", "peers", f"this server ([server] address {address}) is not"
                      " among them")
    return tuple(sorted(peers))


def _check_reservation(r: _Reader, key: str, ip: IPv4Address, start: IPv4Address | None,
                       netmask: IPv4Address) -> None:
    """A reservation must be a host address of the pool's subnet: it is handed out with
    the pool's netmask and router."""
    if start is None:
        return
    network = IPv4Network(f"{start}/{netmask}", strict=False)
    if ip not in network:
        raise r.error("dhcp.reservations", key, f"{ip} is outside {network} (the pool's "
                      "subnet: range_start/netmask)")
    if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
        which = "network" if ip == network.network_address else "broadcast"
        raise r.error("dhcp.reservations", key, f"{ip} is the {which} address of {network}")


def _tftp(r: _Reader) -> TftpConfig:
    address = r.raw("tftp", "address")
    if address:
        r.convert("tftp", "address", ipaddress.ip_address, "an IPv4 or IPv6 address")
    enabled = r.boolean("tftp", "enabled")
    return TftpConfig(
        enabled=enabled,
        port=r.port("tftp", "port"),
        address=address,
        root=r.folder("tftp", "root") if enabled else r.path("tftp", "root"),
        ipxe_dir=r.path("tftp", "ipxe_dir"),
        max_blksize=r.integer("tftp", "max_blksize", 8, 65464),
        max_windowsize=r.integer("tftp", "max_windowsize", 1, 65535),
        max_sessions=r.integer("tftp", "max_sessions", 1, 1_000_000),
        max_sessions_per_client=r.integer("tftp", "max_sessions_per_client", 1, 1_000_000),
        stall_timeout=r.integer("tftp", "stall_timeout", 1, 86_400),
    )


def _http(r: _Reader) -> HttpConfig:
    interface = r.raw("http", "interface")
    if interface:
        r.convert("http", "interface", ipaddress.ip_address, "an IP address")
    public_url = r.url("http", "public_url")
    if public_url and not _SCRIPT_SAFE_URL.fullmatch(public_url):
        raise r.error("http", "public_url", f"{public_url!r} has characters that iPXE "
                      "scripts treat specially (only letters, digits and -._~:/%@[]+,= "
                      "may appear; no query or fragment)")
    return HttpConfig(
        port=r.port("http", "port"),
        interface=interface,
        public_url=public_url,
        api_token=r.raw("http", "api_token"),
    )


def _catalog(r: _Reader) -> CatalogConfig:
    texts = [p.strip() for p in r.raw("catalog", "paths").split(",") if p.strip()]
    return CatalogConfig(
        paths=tuple(r.folder("catalog", "paths", text) for text in texts),
        rescan_interval=r.integer("catalog", "rescan_interval", 0, 86_400),
        pxe_default=r.boolean("catalog", "pxe_default"),
    )


def _boot(r: _Reader, parser: configparser.RawConfigParser) -> BootConfig:
    files = dict(DEFAULT_BOOT_FILES)
    if parser.has_section("boot.files"):
        for key, value in parser.items("boot.files"):
            if not is_boot_files_key(key):
                raise r.error(
                    "boot.files", key, "is not an architecture name, option-93 code or default"
                )
            if not value.strip():
                raise r.error("boot.files", key, "needs a file name or URL")
            files[key] = value.strip()
    return BootConfig(
        unknown=r.choice("boot", "unknown", ("local", "menu")),
        menu_timeout=r.integer("boot", "menu_timeout", 0, 3600),
        api_url=r.url("boot", "api_url"),
        max_machines=r.integer("boot", "max_machines", 1, 10_000_000),
        efi_loader=r.choice("boot", "efi_loader", ("ipxe", "shim")),
        shim_second_stage=r.choice("boot", "shim_second_stage", ("grub", "ipxe")),
        shim_dir=r.path("boot", "shim_dir"),
        grub_dir=r.path("boot", "grub_dir"),
        files=files,
    )


def _v6(r: _Reader, key: str) -> IPv6Address | None:
    text = r.raw("dhcp6", key)
    if not text:
        return None
    return r.convert("dhcp6", key, IPv6Address, "an IPv6 address")


def _dhcp6(r: _Reader, server_interface: str) -> Dhcp6Config:
    mode = r.choice("dhcp6", "mode", ("off", "stateless", "full"))
    interface = r.raw("dhcp6", "interface")
    if interface:
        if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", interface):
            raise r.error("dhcp6", "interface", f"{interface!r} is not an interface name")
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise r.error("dhcp6", "interface",
                          f"no network interface {interface!r} on this machine") from None
    if mode != "off" and not (interface or server_interface):
        raise r.error("dhcp6", "interface", "DHCPv6 listens on one link: name the interface "
                      "here or in [server] interface")
    address = _v6(r, "address")
    if address is not None and (address.is_link_local or address.is_multicast
                                or address.is_unspecified):
        raise r.error("dhcp6", "address", f"{address} is not a unicast address clients "
                      "can reach beyond the link (no link-local, multicast or ::)")
    start, end = _v6(r, "range_start"), _v6(r, "range_end")
    if mode == "full":
        if start is None:
            raise r.error("dhcp6", "range_start", "full mode needs a pool (range_start)")
        if end is None:
            raise r.error("dhcp6", "range_end", "full mode needs a pool (range_end)")
    if start is not None and end is not None:
        if end < start:
            raise r.error("dhcp6", "range_end", f"{end} comes before range_start {start}")
        network = IPv6Network(f"{start}/64", strict=False)
        if end not in network:
            raise r.error("dhcp6", "range_end", f"{end} is outside {network} (range_start's "
                          "/64)")
    lease_time = r.integer("dhcp6", "lease_time", 60, 2**31 - 1)
    preferred = r.integer("dhcp6", "preferred_lifetime", 0, 2**31 - 1)
    if preferred > lease_time:
        raise r.error("dhcp6", "preferred_lifetime", f"{preferred} is longer than "
                      f"lease_time {lease_time} (the valid lifetime)")
    dns = []
    for part in (p.strip() for p in r.raw("dhcp6", "dns").split(",")):
        if part:
            try:
                dns.append(IPv6Address(part))
            except ValueError:
                raise r.error("dhcp6", "dns", f"{part!r} is not an IPv6 address") from None
    return Dhcp6Config(mode=mode, interface=interface, address=address, range_start=start,
                       range_end=end, lease_time=lease_time, preferred_lifetime=preferred,
                       dns=tuple(dns))


def _new_parser() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        delimiters=("=",),
        comment_prefixes=(";", "#"),
        inline_comment_prefixes=(";", "#"),
        strict=True,
        empty_lines_in_values=False,
        interpolation=None,
    )
    return parser


def _check_names(parser: configparser.RawConfigParser, source: str) -> None:
    for section in parser.sections():
        if section in OPEN_SECTIONS:
            continue
        if section not in DEFAULTS:
            raise ConfigError(f"{source}: [{section}]: unknown section")
        for key in parser.options(section):
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{source}: [{section}] {key}: unknown key")


def parse_override(text: str) -> tuple[str, str, str]:
    """Split a ``--set section.key=value`` argument into its three parts.

    The section may itself contain dots (``dhcp.reservations.52:54:..=10.0.0.9``
    is not supported; use the file for open sections), so the key is the last
    dotted part before ``=``.

    :raises ConfigError: when it is not of that form.
    """
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().rpartition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {text}: expected section.key=value")
    return section, key.lower(), value.strip()


def load_text(
    text: str,
    folder: Path,
    source: str = "<config>",
    overrides: Iterable[tuple[str, str, str]] = (),
) -> Config:
    """Build a :class:`Config` from ini text; relative paths are taken from ``folder``.

    :param overrides: ``(section, key, value)`` triples applied over the file, validated
        like it (``--set``).
    :raises ConfigError: one line naming source, section and key.
    """
    parser = _new_parser()
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{source}: {first}") from None
    _check_names(parser, source)
    overridden: dict[tuple[str, str], str] = {}
    for section, key, value in overrides:
        if section not in DEFAULTS and section not in OPEN_SECTIONS:
            raise ConfigError(f"--set: [{section}]: unknown section")
        if section in DEFAULTS and key not in DEFAULTS[section]:
            raise ConfigError(f"--set: [{section}] {key}: unknown key")
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value)
        overridden[(section, key)] = f"{section}.{key}={value}"
    reader = _Reader(parser, source, folder, overridden)
    server = _server(reader)
    return Config(
        path=None,
        server=server,
        dhcp=_dhcp(reader, parser),
        tftp=_tftp(reader),
        http=_http(reader),
        catalog=_catalog(reader),
        boot=_boot(reader, parser),
        dhcp6=_dhcp6(reader, server.interface),
    )


def load(path: str | Path, overrides: Iterable[tuple[str, str, str]] = ()) -> Config:
    """Read the config file at ``path`` (see :func:`load_text`).

    :raises ConfigError: for an unreadable file or any bad value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    config = load_text(text, path.resolve().parent, str(path), overrides)
    return evolve(config, path=path)
