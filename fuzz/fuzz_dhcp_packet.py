"""atheris target: the DHCP codec and the option readers.

Any datagram must either parse or raise DhcpPacketError; a parsed packet must
survive every option reader the servers use and re-encode to a packet that
parses back equal. Anything else is a finding. Run:
``python fuzz/fuzz_dhcp_packet.py -atheris_runs=1000000 fuzz/corpus/dhcp`` (see fuzz/README.md).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from pxetwist.dhcp import options as opt
    from pxetwist.dhcp.packet import DhcpPacketError, encode, parse
    from pxetwist.dhcp.replies import arch_name, echoed, facts_of


def test_one_input(data: bytes) -> None:
    try:
        packet = parse(data)
    except DhcpPacketError:
        return
    # every reader a controller calls on a request
    opt.message_type(packet)
    opt.user_classes(packet)
    opt.is_ipxe(packet)
    opt.machine_uuid(packet)
    opt.client_key(packet)
    opt.requested_ip(packet)
    opt.server_id(packet)
    opt.hostname(packet)
    opt.order_options(list(packet.options), opt.parameter_list(packet))
    opt.pxe_boot_item_reply(packet.option(opt.VENDOR_SPECIFIC))
    facts = facts_of(packet)
    arch_name(facts)
    echoed(packet)
    _ = packet.mac, packet.broadcast
    try:
        again = encode(packet)
    except DhcpPacketError:
        return  # a 64-byte sname cannot be sent back; refusing it is the contract
    back = parse(again)
    if back != packet:
        raise AssertionError(f"round trip changed the packet:\n{packet!r}\n{back!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
