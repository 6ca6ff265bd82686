"""Marks shared by the tests that make network namespaces (root, and real programs)."""

from __future__ import annotations

import os
import shutil

import pytest


def in_namespaces(*programs: str, why: str = "") -> list[pytest.MarkDecorator]:
    """An integration test that needs root (``ip netns``) and these programs on PATH."""
    missing = [name for name in programs if shutil.which(name) is None]
    return [
        pytest.mark.integration,
        pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
        pytest.mark.skipif(bool(missing), reason=why or f"{', '.join(missing)} needed"),
    ]
