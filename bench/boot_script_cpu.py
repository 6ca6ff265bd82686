"""Server-side CPU cost of ``GET /pxe/boot.ipxe?mac=`` (the fast path, a MAC assigned to a
linux entry): renders per CPU second, best of 7 x 10,000, no sockets (wrk is not always
installed; CPU time is steadier than wall time on a shared machine). Compare two trees:

    PYTHONPATH=TREE python bench/boot_script_cpu.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from twisted.web.test.requesthelper import DummyRequest

from tests.http.helpers import MAC, make_rig


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rig = make_rig(Path(folder))
        rig.put(f"/machines/{MAC}", {"entry": "lab", "once": False})
        root = rig.app.resource()

        def once() -> bytes:
            request = DummyRequest([b"pxe", b"boot.ipxe"])
            request.path = b"/pxe/boot.ipxe"
            request.args = {b"mac": [MAC.encode()], b"arch": [b"x86_64"]}
            body: bytes = root.render(request)
            return body

        assert b"kernel " in once()
        best = float("inf")
        for _ in range(7):
            start = time.process_time()
            for _ in range(10_000):
                once()
            best = min(best, time.process_time() - start)
        print(f"{10_000 / best:.0f} renders per CPU second")


if __name__ == "__main__":
    main()
