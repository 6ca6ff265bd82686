"""``twistd pxeboot``: command-line options and ``makeService``, as twisted.names/tap.py.

The only module that touches the global reactor, inside :func:`makeService`.
A bad config or an unusable state file ends the process here, before anything
binds, with one line naming what is wrong.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)
from twisted.python import usage
from twisted.python.logfile import LogFile

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
        textFileLogObserver(output), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )


def makeService(options: Options) -> IService:
    """Build the server from the loaded config with the global reactor."""
    from twisted.internet import reactor

    from pxetwist.service import make_service

    assert options.config is not None
    try:
        service = make_service(options.config, reactor)
    except StoreError as e:
        raise SystemExit(f"pxetwist: {e}") from None
    service.log_observer = _log_observer(options)
    return service
