"""The twistd plugin: ``twistd -n pxeboot --config etc/pxe.ini``. Wiring only."""

from twisted.application.service import ServiceMaker

pxeboot = ServiceMaker(
    "pxetwist",
    "pxetwist.tap",
    "A PXE network-boot server: DHCP/proxyDHCP, TFTP and HTTP (iPXE).",
    "pxeboot",
)
