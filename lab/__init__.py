"""The lab: network namespaces, a busybox boot payload and QEMU, for e2e tests and the demo.

Everything runs inside network namespaces this code creates and removes; nothing
touches the machine's own interfaces.
"""
