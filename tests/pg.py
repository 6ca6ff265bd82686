"""A throwaway PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` in a temporary
folder, listening on a Unix socket there only (no TCP port), removed afterwards.

PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user
(Debian's package makes it) in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from itertools import count
from pathlib import Path

_numbers = count(1)


def pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not installed (apt postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'psycopg[binary]')"
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the cluster as"
    return None


class Cluster:
    """A running cluster; :meth:`new_database` makes an empty database and its URL."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "socket"
        self.data = folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        name = f"t{os.getpid()}_{next(_numbers)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.folder / "log"), "-o",
                    f"-c listen_addresses='' -c unix_socket_directories='{self.socket}'"
                    " -c fsync=on -c synchronous_commit=on -c max_connections=50", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def pg_ctl(self, *args: str) -> None:
        bin_folder = pg_bin()
        assert bin_folder is not None
        _run_as_owner([str(bin_folder / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                       *args])


def _run_as_owner(command: list[str]) -> None:
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster; stop it and remove its folder on exit."""
    bin_folder = pg_bin()
    assert bin_folder is not None
    folder = Path(tempfile.mkdtemp(prefix="pxetwist-pg-"))
    if os.getuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    os.chmod(folder, 0o755)
    result = Cluster(folder)
    started = False
    try:
        _run_as_owner(["mkdir", "-p", str(result.socket)])
        _run_as_owner([str(bin_folder / "initdb"), "-D", str(result.data), "-U", "postgres",
                       "--auth=trust", "-E", "UTF8", "--no-instructions"])
        result.start()
        started = True
        yield result
    finally:
        if started:
            with suppress(subprocess.SubprocessError):
                result.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
