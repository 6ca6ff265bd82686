"""The optional external machine source (``[boot] api_url``), in pixiecore's API shape.

An operator who already keeps machine data elsewhere answers
``GET {api_url}/v1/boot/{mac}`` with ``{"kernel": URL, "initrd": [URL, ...],
"cmdline": "..."}`` or ``{"ipxe_script": "#!ipxe ..."}``; any other answer (not
200, not that JSON, too slow) means "not ours", and the machine boots from the
catalog as if no source were configured. Answers are cached per MAC for a short
while, so a client that retries does not ask twice a second.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pxetwist import cmdline

#: Seconds an answer from the operator's service is waited for.
LOOKUP_TIMEOUT = 2.0
#: Seconds an answer (or "not ours") is reused for the same MAC.
CACHE_SECONDS = 10.0


class HTTPGetter(Protocol):
    """What the source needs of an HTTP client: ``treq``'s ``HTTPClient`` or ``StubTreq``."""

    def get(self, url: str, /) -> Deferred[Any]: ...


@frozen
class ExternalBoot:
    """What the operator's service said a machine boots.

    :ivar kernel: an http(s) URL, or "" when ``ipxe_script`` is given.
    :ivar initrd: http(s) URLs, in load order.
    :ivar cmdline: kernel arguments (sanitised when the script is rendered).
    :ivar ipxe_script: a whole iPXE script the service wrote, or "".
    """

    kernel: str = ""
    initrd: tuple[str, ...] = ()
    cmdline: str = ""
    ipxe_script: str = ""


#: :attr:`SourceAnswer.outcome` when the service described the machine's boot.
ANSWERED = "answered"
#: ... when it answered, but not with a boot description (not 200, or bad JSON).
NOT_OURS = "not ours"


@frozen
class SourceAnswer:
    """What asking the service about one MAC came to.

    :ivar boot: the boot description, or ``None`` (the catalog decides).
    :ivar outcome: :data:`ANSWERED`, :data:`NOT_OURS`, or ``"no answer: <why>"`` (a
        timeout or an error).
    """

    boot: ExternalBoot | None
    outcome: str


class BadAnswerError(ValueError):
    """The service answered 200 with something that is not a boot description."""


def _is_http_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://")) and len(text) < 2048


def parse_answer(body: object) -> ExternalBoot:
    """An :class:`ExternalBoot` from the service's JSON, or raise :class:`BadAnswerError`.

    ``ipxe-script`` (pixiecore's spelling) is accepted for ``ipxe_script``.
    """
    if not isinstance(body, dict):
        raise BadAnswerError("the answer is not a JSON object")
    script = body.get("ipxe_script", body.get("ipxe-script", ""))
    if script:
        if not isinstance(script, str) or not script.startswith("#!ipxe"):
            raise BadAnswerError("ipxe_script must be a string starting with #!ipxe")
        return ExternalBoot(ipxe_script=script if script.endswith("\n") else script + "\n")
    kernel = body.get("kernel")
    if not _is_http_url(kernel):
        raise BadAnswerError("kernel must be an http:// or https:// URL")
    initrd = body.get("initrd", [])
    if not isinstance(initrd, list) or not all(_is_http_url(u) for u in initrd):
        raise BadAnswerError("initrd must be a list of http:// or https:// URLs")
    cmdline = body.get("cmdline", "")
    if not isinstance(cmdline, str):
        raise BadAnswerError("cmdline must be a string")
    assert isinstance(kernel, str)
    return ExternalBoot(kernel=kernel, initrd=tuple(initrd), cmdline=cmdline)


@define
class MachineSource:
    """Asks ``{api_url}/v1/boot/{mac}`` what a machine boots.

    :ivar api_url: the service's base URL (no trailing ``/``).
    :ivar http: the client; :meth:`lookup`'s Deferred never fails because of it.
    :ivar clock: for the timeout and the cache.
    """

    api_url: str
    http: HTTPGetter
    clock: IReactorTime
    timeout: float = LOOKUP_TIMEOUT
    cache_seconds: float = CACHE_SECONDS
    _cache: dict[str, tuple[float, SourceAnswer]] = field(factory=dict, init=False)
    _log = Logger()

    def cached(self, mac: str) -> tuple[bool, ExternalBoot | None]:
        """``(True, answer)`` if an answer for ``mac`` is fresh, else ``(False, None)``."""
        hit = self._cache.get(mac)
        if hit is not None and hit[0] > self.clock.seconds():
            return True, hit[1].boot
        return False, None

    def lookup(self, mac: str) -> Deferred[ExternalBoot | None]:
        """What ``mac`` boots per the service, or ``None`` for "not ours" (also on any
        error or timeout). Fires within :attr:`timeout` seconds."""
        return self.ask(mac).addCallback(lambda answer: answer.boot)

    def ask(self, mac: str) -> Deferred[SourceAnswer]:
        """Like :meth:`lookup`, saying also whether the service answered, disowned the
        MAC or gave no answer (for explain). Never fails."""
        hit = self._cache.get(mac)
        if hit is not None and hit[0] > self.clock.seconds():
            return succeed(hit[1])
        d = self._ask(mac)
        d.addTimeout(self.timeout, self.clock)
        d.addCallback(lambda boot: SourceAnswer(boot, ANSWERED if boot else NOT_OURS))

        def failed(reason: Any) -> SourceAnswer:
            why = reason.getErrorMessage() or reason.type.__name__
            self._log.info("machine source: no answer for {mac}: {why}", mac=mac, why=why)
            return SourceAnswer(None, f"no answer: {why}")

        d.addErrback(failed)

        def remember(result: SourceAnswer) -> SourceAnswer:
            self._cache[mac] = (self.clock.seconds() + self.cache_seconds, result)
            if len(self._cache) > 10_000:  # bounded: drop the stalest half
                for key in sorted(self._cache, key=lambda k: self._cache[k][0])[:5_000]:
                    del self._cache[key]
            return result

        d.addCallback(remember)
        return d

    @inlineCallbacks
    def _ask(self, mac: str) -> Any:
        response = yield self.http.get(f"{self.api_url}/v1/boot/{mac}")
        if response.code != 200:
            yield response.content()  # read it, so the connection can be reused
            return None
        body = yield response.json()
        try:
            boot = parse_answer(body)
        except BadAnswerError as e:
            self._log.warn("machine source: bad answer for {mac}: {why}", mac=mac, why=e)
            return None
        for why in cmdline.problems(boot.cmdline, settings_allowed=False):
            self._log.warn("machine source: cmdline for {mac}: {why}; left out of the kernel"
                           " line", mac=mac, why=why)
        return boot

