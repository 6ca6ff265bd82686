"""The ``pxetwist`` command against the real Klein app in memory (StubTreq), a closed port,
and a real twistd server on loopback."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from pxetwist.cli import parser, run
from pxetwist.events import Stage
from tests.http.helpers import BASE, MAC, Rig, make_catalog, make_rig
from tests.integration.test_twistd import free_port, wait_for
from tests.loopback_server import running_pxeboot

REPO = Path(__file__).resolve().parents[1]


def cli(rig: Rig, *argv: str) -> tuple[int, str, str]:
    """Run one command over the rig's StubTreq: ``(status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    d = ensureDeferred(run(["--url", BASE, *argv], rig.client, rig.clock, out, err))
    for _ in range(100):
        if d.called:
            break
        rig.client.flush()
    code = SynchronousTestCase().successResultOf(d)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PXETWIST_URL", raising=False)
    monkeypatch.delenv("PXETWIST_TOKEN", raising=False)


def test_list_is_a_table_with_pxe_flags(tmp_path: Path) -> None:
    """`list` prints one row per entry with its PXE flag, label, order and default mark."""
    rig = make_rig(tmp_path)
    code, out, err = cli(rig, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["PXE", "ID", "LABEL", "ORDER", "DEFAULT", "KIND"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["hello-ipxe", "lab", "rescue-iso", "tool-efi"]
    assert rows["lab"][0] == "on" and "Lab" in rows["lab"] and rows["lab"][-1] == "linux"


def test_list_shows_broken_entries(tmp_path: Path) -> None:
    """A broken entry.ini is reported under the table, not hidden."""
    rig = make_rig(tmp_path)
    broken = tmp_path / "catalog" / "broken"
    broken.mkdir()
    (broken / "entry.ini").write_text("[entry]\nkind = nonsense\n")
    rig.catalog.load()
    code, out, _ = cli(rig, "list")
    assert code == 0 and any(line.startswith("broken: ") and "broken" in line[8:]
                             for line in out.splitlines())


def test_json_output_is_the_servers_answer(tmp_path: Path) -> None:
    """`--json` (before or after the subcommand) prints the API's JSON unchanged."""
    rig = make_rig(tmp_path)
    expected = json.loads(rig.get("/containers")[1])
    assert json.loads(cli(rig, "--json", "list")[1]) == expected
    assert json.loads(cli(rig, "list", "--json")[1]) == expected
    assert json.loads(cli(rig, "show", "lab", "--json")[1])["kind"] == "linux"


def test_show_prints_the_entry(tmp_path: Path) -> None:
    """`show ID` prints the entry's fields, one per line."""
    rig = make_rig(tmp_path)
    code, out, _ = cli(rig, "show", "lab")
    assert code == 0 and "kernel:      vmlinuz" in out and "initrd:      initrd.img" in out


def test_toggle_changes_the_menu(tmp_path: Path) -> None:
    """`toggle ID` takes the entry out of GET /pxe, and a second toggle puts it back."""
    rig = make_rig(tmp_path)
    code, out, _ = cli(rig, "toggle", "lab")
    assert code == 0 and out == "lab: PXE disabled\n"
    assert "lab" not in [e["id"] for e in json.loads(rig.get("/pxe")[1])["entries"]]
    assert cli(rig, "toggle", "lab")[1] == "lab: PXE enabled\n"
    assert "lab" in [e["id"] for e in json.loads(rig.get("/pxe")[1])["entries"]]


def test_menu_set_reaches_the_server(tmp_path: Path) -> None:
    """`menu set` sends label, order, default and kernel args; the server keeps them."""
    rig = make_rig(tmp_path)
    code, _, err = cli(rig, "menu", "set", "lab", "--label", "Lab box", "--order", "3",
                       "--default", "--args", "quiet")
    assert code == 0, err
    entry = json.loads(rig.get("/containers/lab/info")[1])
    assert (entry["label"], entry["order"], entry["default"], entry["kernel_args"]) == \
        ("Lab box", 3, True, "quiet")
    assert json.loads(rig.get("/pxe")[1])["default"] == "lab"
    assert cli(rig, "menu", "set", "lab", "--order", "none", "--no-default")[0] == 0
    entry = json.loads(rig.get("/containers/lab/info")[1])
    assert entry["order"] is None and entry["default"] is False


def test_menu_set_refusals_are_one_line(tmp_path: Path) -> None:
    """An unsafe label is the server's 400 reason; nothing to change is refused locally."""
    rig = make_rig(tmp_path)
    code, out, err = cli(rig, "menu", "set", "lab", "--label", "a && shell")
    assert code == 1 and out == "" and err.startswith("pxetwist: POST /pxe/lab/menu: 400: ")
    assert err.count("\n") == 1 and "label" in err
    assert cli(rig, "menu", "set", "lab")[0] == 1
    assert cli(rig, "menu", "set", "lab", "--order", "first")[2].startswith("pxetwist: --order")


def test_refresh_machines_assign_unassign_installed(tmp_path: Path) -> None:
    """Each machine command reaches the server and its state changes as asked."""
    rig = make_rig(tmp_path)
    assert cli(rig, "refresh")[1] == "catalog: 4 entries, 0 broken\n"
    code, out, _ = cli(rig, "assign", MAC, "lab", "--once")
    assert code == 0 and "pending" in out
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    cli(rig, "assign", MAC.replace(":", "-"), "lab")
    machine = rig.machines.get(MAC)
    assert machine is not None and (machine.state, machine.once) == ("assigned", False)
    code, out, _ = cli(rig, "machines")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["MAC", "STATE", "ENTRY"]
    assert out.splitlines()[1].split()[:4] == [MAC, "assigned", "lab", "permanent"]
    cli(rig, "unassign", MAC)
    assert rig.machines.get(MAC).state == "local"  # type: ignore[union-attr]
    cli(rig, "assign", MAC, "lab", "--once")
    assert cli(rig, "installed", MAC)[0] == 0
    assert rig.machines.get(MAC).state == "installed"  # type: ignore[union-attr]


def test_explain_and_leases(tmp_path: Path) -> None:
    """`explain MAC` prints the decision and the script; `leases` prints a table."""
    rig = make_rig(tmp_path)
    cli(rig, "assign", MAC, "lab")
    code, out, _ = cli(rig, "explain", MAC)
    assert code == 0 and "decision:  assigned entry lab" in out and "kernel " in out
    code, out, _ = cli(rig, "leases")
    assert code == 0 and out.split() == ["IP", "MAC", "STATE", "HOSTNAME", "EXPIRES"]


def test_events_table_and_filter(tmp_path: Path) -> None:
    """`events` lists recent events; `--mac` keeps only that machine's."""
    rig = make_rig(tmp_path)
    rig.events.publish(Stage.DHCP_ACK, mac=MAC, ip="10.77.0.50", detail="10.77.0.50")
    rig.events.publish(Stage.DHCP_ACK, mac="52:54:00:00:00:99", ip="10.77.0.51")
    code, out, _ = cli(rig, "events", "--mac", MAC)
    rows = out.splitlines()[1:]
    assert code == 0 and len(rows) == 1 and MAC in rows[0] and "dhcp.ack" in rows[0]


def test_events_follow_prints_new_events_as_they_come(tmp_path: Path) -> None:
    """`events --follow` long-polls: an event published later is printed, then --count ends it."""
    rig = make_rig(tmp_path)
    rig.events.publish(Stage.DHCP_DISCOVER, mac=MAC)
    out, err = io.StringIO(), io.StringIO()
    d = ensureDeferred(run(["--url", BASE, "events", "--follow", "--count", "3", "--json"],
                           rig.client, rig.clock, out, err))
    rig.client.flush()
    assert not d.called and [json.loads(x)["stage"] for x in out.getvalue().splitlines()] == \
        [Stage.DHCP_DISCOVER]
    rig.events.publish(Stage.TFTP_START, mac=MAC)
    rig.client.flush()
    rig.events.publish(Stage.HTTP_SCRIPT, mac=MAC)
    for _ in range(20):
        rig.client.flush()
    assert SynchronousTestCase().successResultOf(d) == 0
    assert [json.loads(x)["stage"] for x in out.getvalue().splitlines()] == \
        [Stage.DHCP_DISCOVER, Stage.TFTP_START, Stage.HTTP_SCRIPT]


def test_401_with_a_token_protected_server(tmp_path: Path) -> None:
    """Without the token a mutation fails with the server's reason; with it, it works."""
    rig = make_rig(tmp_path, "[http]\napi_token = s3cret\n")
    code, out, err = cli(rig, "toggle", "lab")
    assert code == 1 and out == ""
    assert err == ("pxetwist: POST /pxe/lab/toggle: 401: this needs Authorization: Bearer "
                   "<api_token> (give --token or set PXETWIST_TOKEN)\n")
    assert "wrong API token" in cli(rig, "--token", "nope", "toggle", "lab")[2]
    assert cli(rig, "--token", "s3cret", "toggle", "lab")[0] == 0
    assert rig.catalog.view("lab").pxe is False  # type: ignore[union-attr]


def test_404_says_the_servers_reason(tmp_path: Path) -> None:
    """An unknown entry or never-seen machine: exit 1 and the server's reason on one line."""
    rig = make_rig(tmp_path)
    assert cli(rig, "show", "nope") == (
        1, "", "pxetwist: GET /containers/nope/info: 404: no entry 'nope'\n")
    code, _, err = cli(rig, "assign", MAC, "nope")
    assert code == 1 and "404: no entry 'nope'" in err
    code, _, err = cli(rig, "explain", "not-a-mac")
    assert code == 1 and "400: 'not-a-mac' is not a MAC address" in err


@pytest.mark.parametrize("command", [
    [], ["list"], ["show"], ["toggle"], ["menu"], ["menu", "set"], ["refresh"], ["machines"],
    ["assign"], ["unassign"], ["installed"], ["explain"], ["leases"], ["events"]])
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` works on the command and every subcommand and exits 0."""
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0 and "usage: pxetwist" in capsys.readouterr().out


def test_environment_gives_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """PXETWIST_URL and PXETWIST_TOKEN are the defaults of --url and --token."""
    monkeypatch.setenv("PXETWIST_URL", "http://10.9.9.9:1234")
    monkeypatch.setenv("PXETWIST_TOKEN", "tok")
    args = parser().parse_args(["list"])
    assert (args.url, args.token) == ("http://10.9.9.9:1234", "tok")
    assert parser().parse_args(["list", "--url", "http://x"]).url == "http://x"


def _cli_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PXETWIST_")}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "pxetwist.cli", *argv], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=environment)


@pytest.mark.integration
def test_server_down_is_one_line_and_exit_1() -> None:
    """Against a closed port on 127.0.0.1: 'cannot reach ...: connection refused', status 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = _cli_process("--url", url, "list")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"pxetwist: cannot reach {url}: connection refused\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("cli")
    make_catalog(folder / "catalog")
    (folder / "tftproot").mkdir()
    with running_pxeboot(folder, "s3cret") as base:
        yield base


@pytest.mark.integration
def test_the_command_against_a_real_server(server: str) -> None:
    """`python -m pxetwist.cli` over real TCP: list, a token-protected toggle, events."""
    listed = _cli_process("list", env={"PXETWIST_URL": server})
    assert listed.returncode == 0 and "lab" in listed.stdout, listed.stderr
    refused = _cli_process("--url", server, "toggle", "lab")
    assert refused.returncode == 1 and "401" in refused.stderr
    toggled = _cli_process("--url", server, "toggle", "lab",
                           env={"PXETWIST_TOKEN": "s3cret"})
    assert toggled.stdout == "lab: PXE disabled\n", toggled.stderr
    menu = json.loads(_cli_process("--url", server, "--json", "list").stdout)
    assert [e["pxe"] for e in menu["entries"] if e["id"] == "lab"] == [False]
    events = _cli_process("--url", server, "events", "--json")
    assert events.returncode == 0 and "events" in json.loads(events.stdout)


def _read_line_with(stream: IO[str], text: str, seconds: float = 20) -> str:
    """The first line of ``stream`` holding ``text`` (bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 1)
        if ready:
            line = stream.readline()
            if not line:
                break
            if text in line:
                return line
    raise AssertionError(f"no line with {text!r} within {seconds} s")


@pytest.mark.integration
def test_events_follow_streams_until_ctrl_c(server: str) -> None:
    """`events --follow` prints an event the real server publishes later; Ctrl-C ends it
    quietly with status 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PXETWIST_")}
    environment["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pxetwist.cli", "--url", server, "events", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=environment)
    try:
        assert process.stdout is not None
        _read_line_with(process.stdout, "SEQ")
        wait_for(f"{server}/pxe/boot.ipxe?mac=52-54-00-00-00-42", process)
        line = _read_line_with(process.stdout, "52:54:00:00:00:42")
        assert "http.script" in line
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and err == ""


def test_machines_reads_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pxetwist machines` follows GET /machines' next cursor to the last page
    (issue 13 item 4)."""
    from pxetwist import cli as cli_module
    from pxetwist.events import Stage
    from pxetwist.http import api

    monkeypatch.setattr(cli_module, "MACHINES_PAGE", 2)
    monkeypatch.setattr(api, "MACHINES_PAGE", 2)  # the server's page without ?limit=
    rig = make_rig(tmp_path)
    macs = [f"02:00:00:00:00:{n:02x}" for n in range(5)]
    for mac in macs:
        rig.events.publish(Stage.DHCP_OFFER, mac=mac)
    code, out, _ = cli(rig, "machines")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == macs
    code, out, _ = cli(rig, "--json", "machines")
    assert [m["mac"] for m in json.loads(out)["machines"]] == macs
