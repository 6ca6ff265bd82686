"""The Klein application: boot routes for iPXE, management routes for operators.

One :class:`PxeApp` instance per server, built over the shared catalog,
machines, store and events (no module-level app), so tests can build as many
as they like and serve them with ``StubTreq(app.resource())``.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxetwist import __version__
from pxetwist.catalog import CatalogService
from pxetwist.config import Config
from pxetwist.events import EventBus
from pxetwist.machines import MachineRegistry
from pxetwist.store import Store


def json_body(request: IRequest, body: Any, code: int = 200) -> bytes:
    """Set the status and content type and encode ``body`` as the response."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body, sort_keys=True).encode() + b"\n"


class PxeApp:
    """The HTTP face of pxetwist.

    :param services: names of the running protocol services, reported by ``/health``.
    """

    app = Klein()

    def __init__(
        self,
        config: Config,
        catalog: CatalogService,
        machines: MachineRegistry,
        store: Store,
        events: EventBus,
        base_url: str,
        services: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.machines = machines
        self.store = store
        self.events = events
        self.base_url = base_url
        self.services = services

    def resource(self) -> IResource:
        """The root resource to serve."""
        return self.app.resource()

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        """Liveness and what runs: for load balancers and the operator's first look."""
        return json_body(
            request,
            {
                "status": "ok",
                "version": __version__,
                "services": list(self.services),
                "entries": len(self.catalog.entries),
            },
        )

    @app.route("/containers", methods=["GET"])
    def containers(self, request: IRequest) -> bytes:
        """The whole catalog with settings, and the entries that could not be read."""
        return json_body(
            request,
            {
                "entries": [view.as_json() for view in self.catalog.views()],
                "errors": [problem.as_json() for problem in self.catalog.problems],
            },
        )
