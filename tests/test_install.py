"""twistd lists the pxeboot plugin after a regular and after an editable install.

Editable installs can hide ``twisted/plugins/`` from Twisted's plugin scan (a
meta-path finder instead of a path entry); setup.cfg's ``package_dir = =.``
makes setuptools use a static .pth instead. This checks both installs in a
fresh virtual environment, so the system's own install cannot mask a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with Twisted and setuptools but not pxetwist."""
    folder = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", folder)
    run(folder / "bin" / "python", "-m", "pip", "install", "-q", "twisted", "setuptools>=64",
        "wheel")
    return folder


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_twistd_lists_pxeboot(venv: Path, tmp_path: Path, editable: bool) -> None:
    """After pip install (editable or not), `twistd --help` lists pxeboot."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "var", "*.egg-info", "__pycache__", ".*cache", "build"))
    python = venv / "bin" / "python"
    args = ["-e", str(source)] if editable else [str(source)]
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *args)
    try:
        listing = run(venv / "bin" / "twistd", "--help", cwd=tmp_path)
        assert "pxeboot" in listing
    finally:
        run(python, "-m", "pip", "uninstall", "-q", "-y", "pxetwist")
