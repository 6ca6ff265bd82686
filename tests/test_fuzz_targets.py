"""The atheris targets still run: each takes 500 inputs from its seed corpus without a
finding (the long runs and their figures are in docs/RELIABILITY.md). Skipped without
atheris (``pip install -e '.[fuzz]'``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"config": "config", "dhcp_packet": "dhcp", "dhcp6_packet": "dhcp6",
           "tftp_packet": "tftp",
           "api_bodies": "api", "protocols": "protocols"}

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris is not installed (the fuzz extra)")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_runs_clean(target: str, tmp_path: Path) -> None:
    """500 inputs through the target: exit 0, no crash file."""
    result = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / f"fuzz_{target}.py"), "-atheris_runs=500",
         f"-artifact_prefix={tmp_path}/", str(tmp_path),
         str(REPO / "fuzz" / "corpus" / TARGETS[target])],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 500" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
