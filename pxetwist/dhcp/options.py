"""What DHCP options mean to a PXE server: reading client facts, building replies' options.

Pure functions over :class:`~pxetwist.dhcp.packet.DhcpPacket`; no I/O.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from ipaddress import IPv4Address

from pxetwist.dhcp.packet import DhcpPacket

# Option codes (RFC 2132, 4578, 3046, iPXE)
SUBNET_MASK = 1
ROUTER = 3
DNS = 6
HOSTNAME = 12
DOMAIN = 15
BROADCAST = 28
VENDOR_SPECIFIC = 43
REQUESTED_IP = 50
LEASE_TIME = 51
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_LIST = 55
MESSAGE = 56
MAX_SIZE = 57
RENEWAL_TIME = 58
REBINDING_TIME = 59
VENDOR_CLASS = 60
CLIENT_ID = 61
TFTP_SERVER = 66
BOOTFILE = 67
USER_CLASS = 77
CLIENT_ARCH = 93
CLIENT_NDI = 94
CLIENT_UUID = 97
RELAY_AGENT = 82
IPXE_ENCAP = 175

# Message types
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
                 ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}

# PXE vendor sub-options (in option 43), PXE spec 2.1
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_SERVERS = 8
PXE_BOOT_MENU = 9
PXE_MENU_PROMPT = 10
PXE_BOOT_ITEM = 71
#: The boot server type we announce (0x8000+ are vendor types).
PXE_SERVER_TYPE = 0x8000


def message_type(packet: DhcpPacket) -> int | None:
    value = packet.option(MESSAGE_TYPE)
    return value[0] if value is not None and len(value) == 1 else None


def client_arch(packet: DhcpPacket) -> int | None:
    """The first architecture of option 93, or ``None``."""
    value = packet.option(CLIENT_ARCH)
    if value is None or len(value) < 2:
        return None
    arch: int = struct.unpack("!H", value[:2])[0]
    return arch


def vendor_class(packet: DhcpPacket) -> str:
    value = packet.option(VENDOR_CLASS)
    return value.decode("latin-1") if value else ""


def user_classes(packet: DhcpPacket) -> list[str]:
    """Option 77 as a list: RFC 3004 length-prefixed entries, or iPXE's raw string."""
    value = packet.option(USER_CLASS)
    if not value:
        return []
    entries: list[str] = []
    i = 0
    while i < len(value):
        length = value[i]
        chunk = value[i + 1:i + 1 + length]
        if length == 0 or len(chunk) != length:
            return [value.decode("latin-1")]  # not RFC 3004: the raw form
        entries.append(chunk.decode("latin-1"))
        i += 1 + length
    return entries


def is_ipxe(packet: DhcpPacket) -> bool:
    """iPXE says so with user class ``iPXE`` (option 77) or its option 175."""
    return packet.option(IPXE_ENCAP) is not None or "iPXE" in user_classes(packet)


def machine_uuid(packet: DhcpPacket) -> str:
    """Option 97 (type 0 + 16 bytes; first three fields little-endian per SMBIOS) as text."""
    value = packet.option(CLIENT_UUID)
    if value is None or len(value) != 17 or value[0] != 0:
        return ""
    return str(uuidlib.UUID(bytes_le=value[1:]))


def client_key(packet: DhcpPacket) -> str:
    """Who this client is for leases: option 61 in hex if present, else the MAC.

    A client id that is just hardware type 1 + the MAC (what iPXE sends) is the MAC:
    the firmware before it sent none, and one machine must keep one address.
    """
    value = packet.option(CLIENT_ID)
    if not value or (value == b"\x01" + packet.chaddr[:6] and packet.hlen == 6):
        return "mac:" + packet.mac
    return "id:" + value.hex()


def requested_ip(packet: DhcpPacket) -> IPv4Address | None:
    value = packet.option(REQUESTED_IP)
    return IPv4Address(value) if value is not None and len(value) == 4 else None


def server_id(packet: DhcpPacket) -> IPv4Address | None:
    value = packet.option(SERVER_ID)
    return IPv4Address(value) if value is not None and len(value) == 4 else None


def hostname(packet: DhcpPacket) -> str:
    value = packet.option(HOSTNAME)
    return value.decode("latin-1")[:63] if value else ""


def parameter_list(packet: DhcpPacket) -> bytes:
    return packet.option(PARAMETER_LIST) or b""


def order_options(options: list[tuple[int, bytes]], wanted: bytes) -> list[tuple[int, bytes]]:
    """Message type and server id first, then the options the client asked for in its
    option-55 order, then the rest (RFC 2132 9.8: "in the order requested")."""
    first = [o for o in options if o[0] in (MESSAGE_TYPE, SERVER_ID)]
    rest = [o for o in options if o[0] not in (MESSAGE_TYPE, SERVER_ID)]
    rank = {code: i for i, code in enumerate(wanted)}
    rest.sort(key=lambda o: rank.get(o[0], len(rank)))
    return first + rest


def pxe_vendor_options(server: IPv4Address, bios_menu: bool) -> bytes:
    """Option 43 for PXE clients.

    BIOS ROMs get what real proxies send: discovery control (no broadcast/multicast
    discovery), one boot server of our type at our address, a one-item menu and a
    zero-timeout prompt, so the ROM asks our port 4011 for the file. UEFI clients get
    discovery control 8: "use the boot file in this packet", so they boot whether or
    not they come back on 4011.
    """
    if not bios_menu:
        return bytes((PXE_DISCOVERY_CONTROL, 1, 0x08, 255))
    label = b"pxetwist"
    server_type = struct.pack("!H", PXE_SERVER_TYPE)
    servers = server_type + b"\x01" + server.packed
    menu = server_type + bytes((len(label),)) + label
    prompt = b"\x00" + b"PXE"
    parts = [
        bytes((PXE_DISCOVERY_CONTROL, 1, 0x07)),
        bytes((PXE_BOOT_SERVERS, len(servers))) + servers,
        bytes((PXE_BOOT_MENU, len(menu))) + menu,
        bytes((PXE_MENU_PROMPT, len(prompt))) + prompt,
    ]
    return b"".join(parts) + b"\xff"


def pxe_boot_item_reply(request_43: bytes | None) -> bytes:
    """Option 43 of the 4011 ACK: the boot item (sub-option 71) the client asked for."""
    item = struct.pack("!HH", PXE_SERVER_TYPE, 0)
    if request_43:
        i = 0
        while i + 1 < len(request_43) and request_43[i] != 255:
            code, length = request_43[i], request_43[i + 1]
            if code == PXE_BOOT_ITEM and length == 4:
                item = request_43[i + 2:i + 6]
            i += 2 + length
    return bytes((PXE_BOOT_ITEM, 4)) + item + b"\xff"


def describe(packet: DhcpPacket) -> str:
    """A one-line summary of a packet for debug logs: message type, xid, MAC, addresses,
    architecture, options 60 and 77, boot file (client texts in repr-safe form)."""
    kind = message_type(packet)
    name = MESSAGE_NAMES.get(kind or 0, "BOOTP" if kind is None else f"type-{kind}")
    arch = client_arch(packet)
    vendor = vendor_class(packet)
    boot_file = packet.file or packet.option(BOOTFILE) or b""
    return (f"{name} xid=0x{packet.xid:08x} mac={packet.mac} ciaddr={packet.ciaddr} "
            f"yiaddr={packet.yiaddr} giaddr={packet.giaddr} "
            f"arch={'-' if arch is None else arch} "
            f"option60={vendor.encode('unicode_escape').decode() if vendor else 'no'} "
            f"option77={'yes' if packet.option(USER_CLASS) is not None else 'no'} "
            f"file={boot_file.decode('latin-1')!r}")
