"""pxetwist: a network-boot (PXE) server suite on Twisted."""

__version__ = "0.1.0"
