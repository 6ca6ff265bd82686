"""``twistd pxeboot``: command-line options and ``makeService``, as twisted.names/tap.py.

The only module that touches the global reactor, inside :func:`makeService`.
A bad config or an unusable state file ends the process here, before anything
binds, with one line naming what is wrong.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any

from twisted.application.service import IService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python import usage
from twisted.python.logfile import LogFile
from zope.interface import implementer

from pxetwist.config import Config, ConfigError, load, parse_override
from pxetwist.store import StoreError


class Options(usage.Options):
    """``--config FILE``, ``--verbose`` and repeatable ``--set section.key=value``."""

    synopsis = "[--config FILE] [--verbose] [--set section.key=value ...]"
    optParameters = [["config", "c", "etc/pxe.ini", "The configuration file (ini)."]]
    optFlags = [["verbose", "v", "Log at debug level (packet dumps)."]]
    longdesc = "Serve PXE network boot: DHCP or proxyDHCP, TFTP and HTTP for iPXE."

    def __init__(self) -> None:
        super().__init__()
        self["set"] = []
        self.config: Config | None = None

    def opt_set(self, value: str) -> None:
        """Override one config key for this run, e.g. --set http.port=8081 (repeatable)."""
        try:
            self["set"].append(parse_override(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        try:
            self.config = load(self["config"], self["set"])
        except ConfigError as e:
            raise SystemExit(f"pxetwist: {e}") from None


@implementer(ILogFilterPredicate)
class _PortChatterFilter:
    """Drops Twisted's "starting on N" / "(UDP Port N Closed)" lines of the ephemeral
    port every TFTP transfer opens (two lines a transfer, more than the transfer's own
    summary line); the listeners' start lines stay."""

    def __call__(self, event: LogEvent) -> PredicateResult:
        text = event.get("log_text") or (event.get("message") or ("",))[0]
        if isinstance(text, str) and (
            text.startswith(("TftpSession starting on ", "StrangerProtocol starting on "))
            or (text.startswith("(UDP Port ") and text.endswith(" Closed)"))
        ):
            return PredicateResult.no
        return PredicateResult.maybe


@lru_cache(maxsize=4)
def _time_of_second(second: int) -> str:
    return formatTime(second)


def _format_time(when: float | None) -> str:
    """:func:`twisted.logger.formatTime`'s text, made once a second: its format has whole
    seconds, and working out the local zone for each line was half the cost of the
    server's log line per DHCPACK (bench/RESULTS.md, "DHCP at Kea's rate")."""
    if when is None:
        return "-"
    second = int(when)
    if round((when - second) * 1e6) >= 1_000_000:  # datetime rounds to microseconds
        second += 1
    return _time_of_second(second)


def classic_log_text(event: LogEvent) -> str | None:
    """An event as ``textFileLogObserver`` writes it (the same text, byte for byte)."""
    return formatEventAsClassicLogText(event, formatTime=_format_time)


def _log_observer(options: Options) -> ILogObserver | None:
    """An observer for twistd's log destination that drops debug events unless
    ``--verbose``; ``None`` leaves twistd's own (syslog, custom loggers)."""
    twistd_options: Any = getattr(options, "parent", None)
    if twistd_options is None or twistd_options.get("syslog") or twistd_options.get("logger"):
        return None
    logfile = twistd_options.get("logfile") or "-"
    if logfile == "-":
        if not twistd_options.get("nodaemon"):
            return None
        output: Any = sys.stdout
    else:
        output = LogFile.fromFullPath(logfile)
    level = LogLevel.debug if options["verbose"] else LogLevel.info
    return FilteringLogObserver(
        FileLogObserver(output, classic_log_text),
        [LogLevelFilterPredicate(defaultLogLevel=level), _PortChatterFilter()],
    )


def _hand_state_to(options: Options, config: Config) -> None:
    """With ``twistd -u/-g``, give the state file (and its WAL files and folder) to the
    user the server will run as, so SQLite can still write after root is dropped."""
    twistd_options: Any = getattr(options, "parent", None)
    uid = twistd_options.get("uid") if twistd_options is not None else None
    gid = twistd_options.get("gid") if twistd_options is not None else None
    if (uid is None and gid is None) or os.getuid() != 0 or config.server.database:
        return
    state = config.server.state
    for path in (state.parent, state, state.with_name(state.name + "-wal"),
                 state.with_name(state.name + "-shm")):
        if path.exists():
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)


def _import_before_dropping_root() -> None:
    """Import now what request handling would import lazily later: after ``twistd -u``
    drops root, the interpreter's own files may no longer be readable (a Python under
    /root, say), and a lazy import would then fail mid-request."""
    import encodings.idna  # noqa: F401  (werkzeug encodes hostnames per request)
    import mimetypes

    mimetypes.init()


def makeService(options: Options) -> IService:
    """Build the server from the loaded config with the global reactor."""
    from twisted.internet import reactor

    from pxetwist.service import make_service

    _import_before_dropping_root()

    assert options.config is not None
    try:
        # DHCP packet dumps only with --verbose: below it they would be dropped anyway,
        # after costing a log event per datagram
        service = make_service(options.config, reactor, packet_dumps=bool(options["verbose"]))
    except (StoreError, ConfigError) as e:
        raise SystemExit(f"pxetwist: {e}") from None
    _hand_state_to(options, options.config)
    service.log_observer = _log_observer(options)
    return service
