"""pxetwist-admin migrate: one server's SQLite state copied into PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxetwist.admin import main
from pxetwist.store import EventRow, LeaseRow, MachineRow, SettingRow, Store
from pxetwist.store_postgres import PostgresStore


def test_migrate_copies_every_table_once(tmp_path: Path, pg_cluster: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`pxetwist-admin migrate` copies every table of a SQLite state into PostgreSQL, and
    refuses a second time."""
    path = tmp_path / "state.sqlite"
    old = Store(path)
    old.put_leases([LeaseRow("10.0.0.5", "52:54:00:00:00:01", "id:01", "h", 5e9, "bound")])
    machine = MachineRow("52:54:00:00:00:01", 1.0, 2.0, "10.0.0.5", "efi64", "", "pending",
                         "debian", True, "dhcp.ack", 2, "node1", (("k", "v"),), "shim")
    old.put_machine(machine)
    old.put_setting(SettingRow("debian", False, "Debian", 2, True, "quiet"))
    old.append_events([EventRow(float(i), machine.mac, "", "dhcp.ack", str(i), "", "")
                       for i in range(3)])
    secret = old.secret_now("installed-callback")
    old.close()
    url = pg_cluster.new_database()
    main(["migrate", str(path), url])
    assert "1 leases, 1 machines, 1 catalog_settings, 3 events, 1 secrets" in \
        capsys.readouterr().out
    new = PostgresStore(url)
    assert new.leases_now()[0].expires == 5e9 and new.machines_now() == [machine]
    assert new.settings_now()["debian"].label == "Debian"
    assert [e.detail for e in new.history(machine.mac).result] == ["0", "1", "2"]
    assert new.secret_now("installed-callback") == secret
    new.close()
    with pytest.raises(SystemExit, match="already holds state"):
        main(["migrate", str(path), url])


def test_migrate_errors_are_one_line_without_the_password(tmp_path: Path) -> None:
    """A migrate that fails says so in one line that never shows the database password."""
    with pytest.raises(SystemExit, match="no such file"):
        main(["migrate", str(tmp_path / "none.sqlite"), "postgresql://u:pw1234@/x"])
    Store(tmp_path / "s.sqlite").close()
    pytest.importorskip("psycopg")
    with pytest.raises(SystemExit) as caught:
        main(["migrate", str(tmp_path / "s.sqlite"),
              f"postgresql://u:pw1234@/x?host={tmp_path}&connect_timeout=2"])
    assert "pw1234" not in str(caught.value) and "\n" not in str(caught.value)
