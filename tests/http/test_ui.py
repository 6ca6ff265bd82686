"""The web page at /ui/: served by a real twistd on 127.0.0.1, driven in real headless
Chromium (Debian's chromium + chromium-driver, through selenium)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.helpers import make_catalog
from tests.loopback_server import running_pxeboot

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "ui-s3cret"
MAC = "52:54:00:12:34:56"
SNEAKY = "<img src=x onerror=document.title='owned'> Sneaky"
#: Where the screenshots are kept after the run (``/var/`` is git-ignored).
SHOTS = REPO / "var" / "ui-screenshots"

pytestmark = pytest.mark.integration


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """twistd pxeboot on loopback: HTTP with an API token, TFTP on a free port, no DHCP;
    a catalog with one broken entry."""
    folder = tmp_path_factory.mktemp("ui")
    make_catalog(folder / "catalog")
    broken = folder / "catalog" / "broken"
    broken.mkdir()
    (broken / "entry.ini").write_text("[entry]\nname = Broken\nkind = nonsense\n")
    sneaky = folder / "catalog" / "sneaky"
    sneaky.mkdir()
    (sneaky / "entry.ini").write_text(f"[entry]\nname = {SNEAKY}\nkind = efi\nfile = x.efi\n")
    (sneaky / "x.efi").write_bytes(b"MZ")
    installer = folder / "catalog" / "inst"
    (installer / "templates").mkdir(parents=True)
    (installer / "linux").write_bytes(b"k")
    (installer / "entry.ini").write_text(
        "[entry]\nname = Installer\nkernel = linux\n"
        "cmdline = url={{ templates_url }}preseed.cfg\n")
    (installer / "templates" / "preseed.cfg").write_text(
        "d-i netcfg/get_hostname string {{ hostname }}\n# role {{ vars.role }}\n")
    (folder / "tftproot").mkdir()
    (folder / "tftproot" / "undionly.kpxe").write_bytes(b"\x90" * 300)
    tftp_port = free_udp_port()
    with running_pxeboot(folder, TOKEN, tftp_port) as base:
        yield base, tftp_port


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str) -> Any:
    return json.loads(fetch(url)[2])


def test_ui_files_are_served(server: tuple[str, int]) -> None:
    """/ui/ is the page, its script and style have their types, and there is no listing."""
    base, _ = server
    code, headers, body = fetch(base + "/ui/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="app.js"' in body
    code, headers, _ = fetch(base + "/ui/app.js")
    assert code == 200 and "javascript" in headers["Content-Type"]
    code, headers, _ = fetch(base + "/ui/style.css")
    assert code == 200 and headers["Content-Type"].startswith("text/css")
    assert fetch(base + "/ui/nope.js")[0] == 404
    assert fetch(base + "/ui/../health")[0] in (200, 404)  # normalised by the client
    assert b"secret" not in fetch(base + "/ui/%2e%2e/%2e%2e/pxe.ini")[2]


def tftp_read(port: int, name: str) -> bytes:
    """One small file over TFTP from the server on loopback (octet, 512-byte blocks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", port))
        data = b""
        while True:
            packet, peer = sock.recvfrom(1024)
            opcode, block = struct.unpack("!HH", packet[:4])
            assert opcode == 3, packet
            data += packet[4:]
            sock.sendto(struct.pack("!HH", 4, block), peer)
            if len(packet) - 4 < 512:
                return data


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium from Debian's packages; nothing downloaded."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="needs selenium (the test extra installs it)")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, tmp_path: Path, name: str, width: int, height: int,
               whole_page: bool = False) -> Path:
    """The page at ``width`` x ``height`` (or all of its length) as PNG, in tmp_path and
    var/ui-screenshots/."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    driver.execute_script("window.scrollTo(0, 0)")
    path = tmp_path / name
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": whole_page})
    path.write_bytes(base64.b64decode(shot["data"]))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)
    print(f"screenshot: {SHOTS / name}")
    return path


def test_page_lists_toggles_edits_and_shows_live_events(
        server: tuple[str, int], browser: Any, tmp_path: Path) -> None:
    """In Chromium: the catalog and its broken entry show; a toggle without the token is a
    clear 401, with it GET /pxe changes; a label edit reaches the server; boot events
    fetched from the server appear in the live timeline."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, tftp_port = server
    # the page re-renders a list when fresh data comes: an element found a moment ago
    # may be gone by the time it is read, so a wait looks again
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(base + "/ui/")

    cards = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.card") or None)
    assert sorted(c.get_attribute("data-entry") for c in cards) == \
        ["hello-ipxe", "inst", "lab", "rescue-iso", "sneaky", "tool-efi"]
    # Text from the server is text: markup in an entry's name is shown, never run.
    assert browser.find_element(By.CSS_SELECTOR, 'article[data-entry="sneaky"] h3').text \
        == SNEAKY
    assert browser.find_elements(By.CSS_SELECTOR, "article img") == []
    assert browser.title == "pxetwist"
    problems = browser.find_element(By.ID, "problems")
    assert problems.is_displayed() and "entry.ini" in problems.text
    lab = browser.find_element(By.CSS_SELECTOR, 'article[data-entry="lab"]')
    assert lab.find_element(By.CSS_SELECTOR, ".badge.on").text == "PXE enabled"

    # Without the token: a clear 401, nothing changes.
    lab.find_element(By.CSS_SELECTOR, "button.toggle").click()
    message = browser.find_element(By.ID, "message")
    wait.until(lambda d: "401" in message.text)
    assert "API token" in message.text
    screenshot(browser, tmp_path, "ui-401.png", 1280, 800)
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert "lab" in [e["id"] for e in get_json(base + "/pxe")["entries"]]

    # With the token (kept in session storage): the toggle reaches GET /pxe.
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    assert browser.execute_script("return sessionStorage.getItem('pxetwist.token')") == TOKEN
    browser.find_element(By.CSS_SELECTOR, 'article[data-entry="lab"] button.toggle').click()
    wait.until(lambda d: "lab" not in [e["id"] for e in get_json(base + "/pxe")["entries"]])
    wait.until(lambda d: d.find_elements(
        By.CSS_SELECTOR, 'article[data-entry="lab"] .badge.off'))

    # Menu editing: a refused label shows the server's reason; a good one reaches it.
    tool = browser.find_element(By.CSS_SELECTOR, 'article[data-entry="tool-efi"]')
    label = tool.find_element(By.NAME, "label")
    label.clear()
    label.send_keys("tool && shell")
    tool.find_element(By.CSS_SELECTOR, "button.save").click()
    wait.until(lambda d: "400" in message.text and "label" in message.text)
    label.clear()
    label.send_keys("EFI tool (firmware)")
    tool.find_element(By.NAME, "order").send_keys("1")
    tool.find_element(By.NAME, "default").click()
    tool.find_element(By.CSS_SELECTOR, "button.save").click()
    wait.until(lambda d: get_json(base + "/containers/tool-efi/info")["order"] == 1)
    info = get_json(base + "/containers/tool-efi/info")
    assert (info["label"], info["default"]) == ("EFI tool (firmware)", True)
    assert get_json(base + "/pxe")["default"] == "tool-efi"
    wait.until(lambda d: d.find_element(
        By.CSS_SELECTOR, 'article[data-entry="tool-efi"] h3').text == "EFI tool (firmware)")

    # A boot as the server sees it: script, TFTP read, kernel, initrd -> the timeline.
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
    fetch(f"{base}/pxe/boot.ipxe?mac={MAC.replace(':', '-')}")
    assert tftp_read(tftp_port, "undionly.kpxe") == b"\x90" * 300
    fetch(f"{base}/containers/lab/files/vmlinuz?mac={MAC}")
    fetch(f"{base}/containers/lab/files/initrd.img?mac={MAC}")
    timeline = f'.machine-timeline[data-mac="{MAC}"]'
    wait.until(lambda d: "http.initrd" in d.find_element(By.ID, "timeline").text)
    done = [li.get_attribute("data-step")
            for li in browser.find_elements(By.CSS_SELECTOR, timeline + " .step.done")]
    assert {"tftp", "script", "kernel", "initrd"} <= set(done)
    stages = [e.get_attribute("data-stage")
              for e in browser.find_elements(By.CSS_SELECTOR, timeline + " .event")]
    assert stages[-2:] == ["http.kernel", "http.initrd"] and "http.script" in stages
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#machines tr[data-mac="{MAC}"]'))

    assert screenshot(browser, tmp_path, "ui-1280x800.png", 1280, 800).stat().st_size > 10_000
    assert screenshot(browser, tmp_path, "ui-phone-390.png", 390, 844).stat().st_size > 5_000
    screenshot(browser, tmp_path, "ui-1280-whole.png", 1280, 800, whole_page=True)
    screenshot(browser, tmp_path, "ui-phone-390-whole.png", 390, 844, whole_page=True)


def page_with_machine(browser: Any, base: str, mac: str, entry: str) -> tuple[Any, str]:
    """The page, with the token given, once ``mac`` (made to ask for a script) has its row
    and ``entry`` is among its choices: ``(WebDriverWait, the row's CSS selector)``."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    fetch(f"{base}/pxe/boot.ipxe?mac={mac}")
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(base + "/ui/")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    row = f'#machines tr[data-mac="{mac}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + f' option[value="{entry}"]'))
    return wait, row


def test_page_assigns_a_machine_once_permanently_or_to_local_disk(
        server: tuple[str, int], browser: Any, tmp_path: Path) -> None:
    """In Chromium: a machine's row assigns it an entry once, for good, or its local disk,
    and the server's record follows each time (issue 13 item 20)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _ = server
    mac = "52:54:00:aa:bb:20"
    wait, row = page_with_machine(browser, base, mac, "lab")

    def assign(entry: str, mode: str | None) -> None:
        # the rows are drawn again when fresh data comes (not while one has the focus):
        # a row found a moment ago may be gone, so try again with the new one
        for attempt in range(5):
            try:
                Select(browser.find_element(By.CSS_SELECTOR, row + " select[name=entry]")
                       ).select_by_value(entry)
                if mode is not None:
                    Select(browser.find_element(By.CSS_SELECTOR, row + " select[name=mode]")
                           ).select_by_value(mode)
                browser.find_element(By.CSS_SELECTOR, row + " button.apply").click()
                return
            except StaleElementReferenceException:
                if attempt == 4:
                    raise

    def record() -> Any:
        return get_json(f"{base}/machines/{mac}")

    assign("lab", "once")
    wait.until(lambda d: record()["state"] == "pending")
    assert (record()["entry"], record()["once"]) == ("lab", True)
    wait.until(lambda d: "(once)" in d.find_element(By.CSS_SELECTOR, row).text)
    screenshot(browser, tmp_path, "ui-assign-once.png", 1280, 800, whole_page=True)
    assign("lab", "permanent")
    wait.until(lambda d: record()["state"] == "assigned")
    assert record()["once"] is False
    wait.until(lambda d: "(permanent)" in d.find_element(By.CSS_SELECTOR, row).text)
    assign("", None)
    wait.until(lambda d: record()["state"] == "local")
    assert record()["entry"] is None
    wait.until(lambda d: "local" in d.find_element(By.CSS_SELECTOR, row + " .state").text)
    screenshot(browser, tmp_path, "ui-assign-local.png", 1280, 800, whole_page=True)
    screenshot(browser, tmp_path, "ui-assign-phone-390.png", 390, 844, whole_page=True)


def test_page_sets_hostname_and_vars_previews_templates_and_shows_the_callback(
        server: tuple[str, int], browser: Any, tmp_path: Path) -> None:
    """In Chromium: a machine's row sets its hostname and vars with its assignment; a
    "preview" link opens its entry's template rendered for it; the installed callback
    shows on the live timeline as the Installed step and an event (issue 15)."""
    from urllib.parse import urlsplit

    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _ = server
    mac = "52:54:00:aa:bb:15"
    wait, row = page_with_machine(browser, base, mac, "inst")
    for attempt in range(5):
        try:
            Select(browser.find_element(By.CSS_SELECTOR, row + " select[name=entry]")
                   ).select_by_value("inst")
            Select(browser.find_element(By.CSS_SELECTOR, row + " select[name=mode]")
                   ).select_by_value("once")
            for name, text in (("hostname", "web7.example"), ("vars", "role=web site=lon")):
                field = browser.find_element(By.CSS_SELECTOR, f"{row} input[name={name}]")
                field.clear()
                field.send_keys(text)
            browser.find_element(By.CSS_SELECTOR, row + " button.apply").click()
            break
        except StaleElementReferenceException:
            if attempt == 4:
                raise
    wait.until(lambda d: get_json(f"{base}/machines/{mac}")["hostname"] == "web7.example")
    record = get_json(f"{base}/machines/{mac}")
    assert (record["state"], record["vars"]) == ("pending", {"role": "web", "site": "lon"})
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " a.preview"))[0]
    assert link.text == "preview preseed.cfg"
    href = link.get_attribute("href")
    assert href == f"{base}/machines/52-54-00-aa-bb-15/templates/preseed.cfg"
    code, _, text = fetch(href)
    assert code == 200 and text == b"d-i netcfg/get_hostname string web7.example\n# role web\n"
    wait.until(lambda d: "web7.example" in d.find_element(By.CSS_SELECTOR, row).text)
    # the installer calls back (no admin token): the timeline shows it live
    url = urlsplit(record["installed_url"])
    request = urllib.request.Request(f"{base}{url.path}?{url.query}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["state"] == "installed"
    timeline = f'#timeline article[data-mac="{mac}"]'
    wait.until(lambda d: "done" in d.find_element(
        By.CSS_SELECTOR, timeline + ' li[data-step="installed"]').get_attribute("class"))
    wait.until(lambda d: "installed (callback from 127.0.0.1)" in d.find_element(
        By.CSS_SELECTOR, timeline).text)
    assert "done" in browser.find_element(
        By.CSS_SELECTOR, timeline + ' li[data-step="template"]').get_attribute("class")
    screenshot(browser, tmp_path, "ui-unattended.png", 1280, 800, whole_page=True)
