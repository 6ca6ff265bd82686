"""Prometheus metrics, one definition each, shared by every protocol.

They live in ``prometheus_client``'s default registry (its usual pattern), so
``GET /metrics`` can render them all; counters only ever grow, so tests read a
value before and after an action and compare.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

DHCP_PACKETS = Counter(
    "pxetwist_dhcp_packets_total", "DHCP messages received, by message type", ["type"]
)
DHCP_REPLIES = Counter("pxetwist_dhcp_replies_total", "DHCP replies sent, by type", ["type"])
DHCP_DROPPED = Counter(
    "pxetwist_dhcp_dropped_total", "DHCP datagrams dropped, by reason", ["reason"]
)
DHCP_LEASES = Gauge("pxetwist_dhcp_leases_in_use", "Bound, unexpired DHCP leases")

TFTP_REQUESTS = Counter("pxetwist_tftp_requests_total", "TFTP requests received", ["op"])
TFTP_TRANSFERS = Counter(
    "pxetwist_tftp_transfers_total", "TFTP transfers finished, by result", ["result"]
)
TFTP_BYTES = Counter("pxetwist_tftp_bytes_total", "TFTP payload bytes sent")
TFTP_SECONDS = Histogram(
    "pxetwist_tftp_transfer_seconds",
    "TFTP transfer duration",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TFTP_RETRANSMITS = Counter("pxetwist_tftp_retransmits_total", "TFTP packets sent again")
TFTP_DROPPED = Counter(
    "pxetwist_tftp_dropped_total", "TFTP datagrams dropped, by reason", ["reason"]
)
TFTP_ACTIVE = Gauge("pxetwist_tftp_sessions_active", "TFTP transfers running")

DHCP_REPLY_SECONDS = Histogram(
    "pxetwist_dhcp_reply_seconds",
    "DHCP request arrival to reply sent (lease write included, [dhcp] reply_delay not)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

HTTP_REQUESTS = Counter(
    "pxetwist_http_requests_total",
    "HTTP requests answered, by route pattern and the status sent", ["route", "status"]
)
HTTP_BYTES = Counter("pxetwist_http_bytes_total", "HTTP body bytes sent, by route pattern",
                     ["route"])
HTTP_SECONDS = Histogram(
    "pxetwist_http_response_seconds",
    "HTTP request arrival to response finished, by route pattern",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)

BOOT_EVENTS = Counter("pxetwist_boot_events_total", "Boot events, by stage", ["stage"])

DATABASE_SECONDS = Histogram(
    "pxetwist_database_seconds", "Time of a shared-state (PostgreSQL) call, by kind",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
DATABASE_ERRORS = Counter("pxetwist_database_errors_total",
                          "Shared-state (PostgreSQL) calls that failed, by kind", ["kind"])


class ByLabel:
    """The children of a metric with one label, kept by label value: ``labels()``
    checks and converts its arguments on every call, which on a per-packet path costs
    more than the count itself (a DHCP storm's profile showed it)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[str, Any] = {}

    def __call__(self, value: str) -> Any:
        """``metric.labels(value)``, made once."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child
