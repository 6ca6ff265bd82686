"""atheris target: the DHCPv6 codec, the option-body readers and the client facts.

Any datagram must either parse or raise Dhcp6PacketError; a parsed message must
survive every reader the controller uses (or refuse with Dhcp6PacketError) and
re-encode to a message that parses back equal. Anything else is a finding. Run:
``python fuzz/fuzz_dhcp6_packet.py -atheris_runs=1000000 fuzz/corpus/dhcp6``.
"""

from __future__ import annotations

import sys
from ipaddress import IPv6Address

import atheris

with atheris.instrument_imports():
    from pxetwist.dhcp6 import packet as p6
    from pxetwist.dhcp6.packet import Dhcp6PacketError, Relay6
    from pxetwist.dhcp6.server import arch_name, client_of

_SOURCE = IPv6Address("fe80::5054:ff:fe12:3456")


def test_one_input(data: bytes) -> None:
    try:
        packet = p6.parse(data)
    except Dhcp6PacketError:
        return
    back = p6.parse(p6.encode(packet))
    if back != packet:
        raise AssertionError(f"round trip changed the message:\n{packet!r}\n{back!r}")
    relay_mac = ""
    message = packet
    while isinstance(message, Relay6):
        relay_mac = p6.link_layer_mac(message.option(p6.CLIENT_LINKLAYER) or b"")
        message = message.message
    try:
        client = client_of(message, _SOURCE, relay_mac)
        arch_name(client.facts)
        for body in message.all(p6.IA_NA):
            p6.encode_ia_na(p6.parse_ia_na(body))
        oro = message.option(p6.ORO)
        if oro is not None:
            p6.parse_u16_list(oro)
    except Dhcp6PacketError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
