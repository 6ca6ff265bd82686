"""The ini loader: the default file, every kind of error as one line, overrides."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.config import ConfigError, load, load_text, normalise_mac, parse_override

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder with the tftproot and catalog folders the defaults point at."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "tftproot").mkdir()
    (tmp_path / "catalog").mkdir()
    return tmp_path / "etc"


def error_of(text: str, folder: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, folder, "test.ini")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_file_loads() -> None:
    """etc/pxe.ini loads: proxy mode, TFTP on 69 from tftproot, HTTP on 8080, state in var/."""
    config = load(REPO / "etc" / "pxe.ini")
    assert config.dhcp.mode == "proxy"
    assert config.tftp.port == 69 and config.tftp.root == REPO / "tftproot"
    assert config.tftp.ipxe_dir == Path("/usr/lib/ipxe")
    assert config.http.port == 8080
    assert config.catalog.paths == (REPO / "catalog",)
    assert config.server.state == REPO / "var" / "pxetwist.sqlite"
    assert config.boot.files["bios"] == "undionly.kpxe"


def test_empty_file_gives_defaults(folder: Path) -> None:
    """An empty file is the documented defaults, paths relative to the file's folder."""
    config = load_text("", folder)
    assert config.dhcp.lease_time == 3600
    assert config.tftp.max_blksize == 65464
    assert config.catalog.pxe_default is True
    assert config.boot.unknown == "local"
    assert config.tftp.root == folder.parent / "tftproot"


def test_full_mode_values(folder: Path) -> None:
    """Full mode reads the pool, network options and reservations (MAC keys with colons)."""
    config = load_text(
        "[dhcp]\nmode = full\nrange_start = 10.77.0.100\nrange_end = 10.77.0.200\n"
        "router = 10.77.0.1\ndns = 10.77.0.1, 9.9.9.9\ndomain = lab\n"
        "[dhcp.reservations]\n52-54-00-12-34-56 = 10.77.0.50 ; the test VM\n",
        folder,
    )
    assert config.dhcp.range_start == IPv4Address("10.77.0.100")
    assert config.dhcp.dns == (IPv4Address("10.77.0.1"), IPv4Address("9.9.9.9"))
    assert config.dhcp.reservations == {"52:54:00:12:34:56": IPv4Address("10.77.0.50")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[dhcp]\nrange_start = 10.0.0.300\n", "[dhcp] range_start: '10.0.0.300' is not an IPv4"),
        ("[dhcp]\nmode = full\nrange_start = 10.0.0.10\nrange_end = 10.0.0.5\n",
         "[dhcp] range_end: 10.0.0.5 comes before range_start"),
        ("[dhcp]\nrange_start = 10.0.0.10\nrange_end = 10.0.1.5\n",
         "[dhcp] range_end: 10.0.1.5 is outside 10.0.0.0/24"),
        ("[dhcp]\nmode = full\n", "[dhcp] range_start: full mode needs a pool"),
        ("[dhcp]\nmode = fast\n", "[dhcp] mode: 'fast' is not one of proxy, full, off"),
        ("[dhcp]\nnetmask = 255.0.255.0\n", "[dhcp] netmask: '255.0.255.0' is not a netmask"),
        ("[tftp]\nport = 70000\n", "[tftp] port: 70000 is out of range"),
        ("[http]\nport = eighty\n", "[http] port: 'eighty' is not a whole number"),
        ("[tftp]\nroot = nowhere\n", "[tftp] root: folder"),
        ("[catalog]\npaths = ../catalog, ../missing\n", "[catalog] paths: folder"),
        ("[tftp]\nenabled = maybe\n", "[tftp] enabled: 'maybe' is not yes or no"),
        ("[tftp]\nblksize = 1468\n", "[tftp] blksize: unknown key"),
        ("[tfpt]\nport = 69\n", "[tfpt]: unknown section"),
        ("[dhcp.reservations]\nnot-a-mac = 10.0.0.1\n", "[dhcp.reservations] not-a-mac:"),
        ("[dhcp.reservations]\n52:54:00:12:34:56 = ten\n",
         "[dhcp.reservations] 52:54:00:12:34:56: 'ten' is not an IPv4"),
        ("[dhcp]\nrange_start = 10.0.0.10\nrange_end = 10.0.0.20\n[dhcp.reservations]\n"
         "52:54:00:12:34:56 = 10.0.1.5\n",
         "[dhcp.reservations] 52:54:00:12:34:56: 10.0.1.5 is outside 10.0.0.0/24"),
        ("[dhcp]\nrange_start = 10.0.0.10\nrange_end = 10.0.0.20\n[dhcp.reservations]\n"
         "52:54:00:12:34:56 = 10.0.0.255\n",
         "[dhcp.reservations] 52:54:00:12:34:56: 10.0.0.255 is the broadcast address"),
        ("[boot.files]\nsparc = x\n", "[boot.files] sparc: is not an architecture"),
        ("[boot]\napi_url = ftp://x\n", "[boot] api_url: 'ftp://x' is not an http"),
        ("[http]\npublic_url = nonsense\n", "[http] public_url:"),
        ("[http]\npublic_url = http://x/${root} && shell\n", "[http] public_url:"),
        ("[http]\npublic_url = http://x/a;b\n", "[http] public_url:"),
        ("[http]\npublic_url = http://x:8080/?q=1\n", "[http] public_url:"),
        ("[http]\npublic_url = http://x/a b\n", "[http] public_url:"),
        ("[http]\npublic_url = http://x/a#frag\n", "[http] public_url:"),
        ("[boot]\nmax_machines = 0\n", "[boot] max_machines: 0 is out of range"),
        ("[server]\naddress = 1.2.3\n", "[server] address: '1.2.3' is not an IPv4"),
        ("[server]\ninterface = eth0; rm -rf\n", "[server] interface:"),
        ("[dhcp]\nport = 67\nport = 68\n", "test.ini: While reading from 'test.ini'"),
    ],
)
def test_each_error_is_one_line_naming_section_and_key(
    folder: Path, text: str, expected: str
) -> None:
    """Each kind of mistake gives one line naming the file, section and key."""
    message = error_of(text, folder)
    assert message.startswith("test.ini: ")
    assert expected in message


@pytest.mark.parametrize("name", ["t" * 5000, "tftp\0root", "~\0root", "~nosuchuser9/x"])
def test_unusable_folder_names_are_config_errors(folder: Path, name: str) -> None:
    """A folder name the OS cannot even look up (too long, NUL) is a one-line error.

    Found by fuzz/fuzz_config.py: they used to raise OSError, ValueError and RuntimeError.
    """
    message = error_of(f"[tftp]\nroot = {name}\n", folder)
    assert "[tftp] root: " in message


def test_boot_files_accept_names_and_codes(folder: Path) -> None:
    """[boot.files] keys may be architecture names or option-93 codes."""
    config = load_text("[boot.files]\nuefi-x64 = snponly.efi\n16 = ipxe.efi\n", folder)
    assert config.boot.files["uefi-x64"] == "snponly.efi"
    assert config.boot.files["16"] == "ipxe.efi"
    assert config.boot.files["default"] == "undionly.kpxe"


def test_overrides_apply_and_are_validated(folder: Path) -> None:
    """--set values replace the file's and are checked like them."""
    config = load_text("[http]\nport = 8080\n", folder, overrides=[("http", "port", "9090")])
    assert config.http.port == 9090
    with pytest.raises(ConfigError, match=r"\[http\] prot: unknown key"):
        load_text("", folder, overrides=[("http", "prot", "1")])
    with pytest.raises(ConfigError, match=r"\[tftp\] port: 'x' is not a whole number"):
        load_text("", folder, overrides=[("tftp", "port", "x")])


def test_set_errors_name_the_set_argument(folder: Path) -> None:
    """A bad --set value is blamed on the --set argument, not on the file (issue 13
    item 22); a bad file value still names the file."""
    (folder / "pxe.ini").write_text("[dhcp]\nmode = proxy\n")
    with pytest.raises(ConfigError) as info:
        load(folder / "pxe.ini", [parse_override("dhcp.mode=offf")])
    assert str(info.value).startswith("--set dhcp.mode=offf: [dhcp] mode: 'offf' is not")
    (folder / "pxe.ini").write_text("[dhcp]\nmode = offf\n")
    with pytest.raises(ConfigError) as info:
        load(folder / "pxe.ini", [parse_override("http.port=9090")])
    assert str(info.value).startswith(f"{folder / 'pxe.ini'}: [dhcp] mode:")


def test_script_safe_public_urls_are_kept(folder: Path) -> None:
    """An ordinary public_url (port, path, IPv6 literal) is accepted as written (item 24)."""
    for url in ("http://10.77.0.1:8080", "https://boot.example.org/pxe",
                "http://[fd00::1]:8080/a-b_c~d"):
        assert load_text(f"[http]\npublic_url = {url}/\n", folder).http.public_url == url


def test_parse_override() -> None:
    """section.key=value splits at the last dot before '='."""
    assert parse_override("http.port=8081") == ("http", "port", "8081")
    assert parse_override("boot.files.bios=x.kpxe") == ("boot.files", "bios", "x.kpxe")
    with pytest.raises(ConfigError):
        parse_override("port=8081")


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing config file is one line naming it."""
    with pytest.raises(ConfigError, match="nope.ini: cannot read"):
        load(tmp_path / "nope.ini")


def test_normalise_mac() -> None:
    """MACs are accepted with ':' or '-' in any case and normalised to lower-case colons."""
    assert normalise_mac("52-54-00-AB-cd-EF") == "52:54:00:ab:cd:ef"
    assert normalise_mac("52:54:00:ab:cd") is None
    assert normalise_mac("zz:54:00:ab:cd:ef") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_text_is_a_config_error_or_a_config(text: str) -> None:
    """Arbitrary text either loads or raises ConfigError with one line; nothing else."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "tftproot").mkdir()
        (base / "catalog").mkdir()
        (base / "etc").mkdir()
        try:
            load_text(text, base / "etc")
        except ConfigError as e:
            assert "\n" not in str(e)


def test_state_may_be_a_postgresql_url(folder: Path) -> None:
    """``[server] state`` = a postgresql:// URL: kept as ``database`` (password and all, for
    the driver), with the default state folder for this server's own files."""
    url = "postgresql://pxe:s3cret@db.example:5433/pxe?sslmode=require"
    config = load_text(f"[server]\nstate = {url}\n", folder, "test.ini")
    assert config.server.database == url
    assert config.server.state == folder.parent / "var" / "pxetwist.sqlite"
    assert load_text("", folder, "test.ini").server.database == ""
