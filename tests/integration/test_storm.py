"""The boot-storm tool (bench/storm.py) against pxetwist, small: 20 machines each do DHCP
as a PXE ROM, TFTP of undionly.kpxe, DHCP as iPXE, the chained scripts, kernel and
initrd, through a relay address in a client namespace. Correctness only: no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.markers import in_namespaces

REPO = Path(__file__).resolve().parents[2]
LOADER = Path("/usr/lib/ipxe/undionly.kpxe")

pytestmark = [
    *in_namespaces("curl", "ip"),
    pytest.mark.skipif(not LOADER.is_file(), reason=f"{LOADER} needed (package ipxe)"),
]


def test_storm_of_twenty_small_machines_all_boot(tmp_path: Path) -> None:
    """Every machine completes every phase, with the right bytes and hashes, no failure."""
    out = tmp_path / "storm.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "storm.py"), "--small", "-n", "20",
         "--rounds", "1", "--servers", "pxetwist", "--deadline", "120", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    [storm] = json.loads(out.read_text())
    assert storm["server"] == "pxetwist" and storm["machines"] == 20
    assert storm["failures"] == 0, storm["errors"]
    assert storm["completed"] == 20
    # Sizes checked by the client too (and every SHA-256, in --small); one size each.
    assert storm["bytes"]["tftp"] == [LOADER.stat().st_size]
    assert storm["bytes"]["kernel"] == [256 * 1024]
    assert storm["bytes"]["initrd"] == [1024 * 1024]
    assert len(storm["bytes"]["script"]) == 1 and storm["bytes"]["script"][0] > 0
