"""Run pxetwist's TFTP service alone (for integration tests and benchmarks).

    python bench/tftp_server.py ROOT [--port 0] [--address 127.0.0.1]

Prints ``READY <port>`` once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--address", default="127.0.0.1", help="IPv4 or IPv6; \"\": both")
    parser.add_argument("--max-sessions", type=int, default=5000)
    parser.add_argument("--max-sessions-per-client", type=int, default=5000)
    parser.add_argument("--quiet", action="store_true", help="log nothing per transfer")
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pxetwist.config import load_text
    from pxetwist.events import EventBus
    from pxetwist.tftp.service import build_tftp_service

    if not args.quiet:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                         redirectStandardIO=False)
    catalog = tempfile.mkdtemp(prefix="pxetwist-bench-catalog-")
    config = load_text(
        f"[tftp]\nport = {args.port}\naddress = {args.address}\nroot = {args.root}\n"
        f"max_sessions = {args.max_sessions}\n"
        f"max_sessions_per_client = {args.max_sessions_per_client}\n"
        f"[catalog]\npaths = {catalog}\n",
        Path.cwd(),
    )
    service = build_tftp_service(config, EventBus(reactor, capacity=100), reactor)
    service.privilegedStartService()
    service.startService()
    print(f"READY {service.port_number()}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
