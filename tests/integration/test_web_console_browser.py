"""The web console in a real browser: Debian's Chromium driven by Playwright against
gunicorn as `ggnet serve` runs the API.  Sign in, see the machines, watch a row change
when a PC asks for its boot script (no reload), reset a writeback with the keyboard
alone, cut a job page's event stream and see the log resume with neither gaps nor
duplicates, and run axe-core (the vendored copy from npm's lock) on every page: 0
WCAG 2.1 AA violations.  Each page's screenshot goes to docs/ui/ (docs/ui.md).

The browser reaches the API through a TCP relay of this test's own, so the test can
drop the browser's connections the way a flaky network does."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from ggnet_testing.api_project import make_project, serve_api, settings
from ggnet_testing.daemons import daemons_fixture, free_port, wait_for  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = str(Path(sys.executable).parent / "python")
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "ggnet_api/web/assets/node_modules/axe-core/axe.min.js"
SHOTS = ROOT / "docs/ui"
MAC = "52:54:00:aa:00:01"  # pc-01 of the test project
AA_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


class Relay:
    """A TCP relay from a port of its own to the API's; cut() drops every open
    connection (new ones are still relayed)."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.requests: list[bytes] = []  # the first bytes of each client connection
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.open += [client, up]
            threading.Thread(target=self._pipe, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.requests.append(data[:2048])
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        with self.lock:
            dropped, self.open = self.open, []
        for s in dropped:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        return len(dropped) // 2

    def close(self) -> None:
        self.server.close()
        self.cut()


def check_a11y(page, name: str) -> None:
    """axe-core on the page as shown: no WCAG 2.1 A/AA violation; and its screenshot."""
    page.evaluate(AXE.read_text())  # not a <script>: the console's CSP allows none inline
    found = page.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}}))"
        ".violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' '))}))",
        AA_TAGS,
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert found == [], f"{name}: {json.dumps(found, indent=1)}"


@pytest.fixture
def api(tmp_path, daemons):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    assert AXE.is_file(), f"{AXE}: missing; run scripts/web_assets.sh (make deps)"
    project, inv = make_project(tmp_path)
    # pc-01's DHCP lease is this machine's loopback address: its boot requests come from it.
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{int(time.time()) + 3600} {MAC} 127.0.0.1 pc-01 *\n")
    cfg = settings(
        tmp_path,
        project,
        inv,
        auth_fail_limit=1000,
        ui_poll_seconds=0.5,
        lease_file=str(leases),
    )
    url, port, db, token = serve_api(daemons, tmp_path, cfg, "desk-admin", "admin")
    relay = Relay(port)
    yield {
        "url": url,
        "browser_url": f"http://127.0.0.1:{relay.port}",
        "db": db,
        "token": token,
        "relay": relay,
    }
    relay.close()


def test_the_console_in_a_browser(api):
    from playwright.sync_api import sync_playwright

    base, db, relay = api["browser_url"], api["db"], api["relay"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # Sign in: any page sends a browser without a session to the form.
            page.goto(base + "/ui/machines")
            assert page.url.startswith(base + "/ui/signin")
            check_a11y(page, "signin")
            page.fill("#token", api["token"])
            page.click("button[type=submit]")
            page.wait_for_url(base + "/ui/machines")
            row = page.locator("#row-pc-01")
            assert row.get_attribute("data-status") == "off"
            check_a11y(page, "machines")

            # The table follows the PC without a reload: pc-01 asks for its script.
            page.evaluate("window.notReloaded = true")
            started = time.monotonic()
            with urllib.request.urlopen(f"{api['url']}/boot/{MAC}", timeout=10) as resp:
                script = resp.read().decode()
            assert "sanboot" in script, script[:300]
            page.wait_for_selector('#row-pc-01[data-status="booting"]', timeout=10_000)
            print(f"row updated {time.monotonic() - started:.2f} s after the boot request")
            assert page.evaluate("window.notReloaded") is True

            # Reset pc-01's writeback with the keyboard alone.
            page.locator("body").focus()
            for _ in range(80):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.id") == "reset-pc-01":
                    break
            else:
                pytest.fail("Tab never reached pc-01's reset button")
            page.keyboard.press("Enter")
            page.wait_for_url(base + "/ui/jobs/*")
            job_id = page.url.rsplit("/", 1)[1]
            job = db.job(job_id)
            assert job["kind"] == "machine" and job["requested_by"] == "desk-admin"
            assert job["extravars"] == {"op": "reset", "client": "pc-01"}
            page.wait_for_selector("#job-state:text-matches('successful|failed')", timeout=60_000)
            check_a11y(page, "job")

            # A job's log resumes after its stream is cut: neither gaps nor duplicates.
            live = "e" * 32
            db.add_job(live, "converge", "site.yml", {}, "desk-admin")
            db.update_job(live, state="running", started=time.time())

            def say(first: int, last: int) -> None:
                for seq in range(first, last + 1):
                    db.add_event(live, seq, {"event": "verbose", "stdout": f"line {seq}"})

            def shown() -> list[str]:
                return page.locator("#job-log li").all_inner_texts()

            say(1, 3)
            page.goto(f"{base}/ui/jobs/{live}")
            assert shown() == ["line 1", "line 2", "line 3"]  # rendered by the server
            say(4, 5)
            lines = page.locator("#job-log li")
            lines.nth(4).wait_for(timeout=10_000)
            assert relay.cut() >= 1
            say(6, 8)  # while the browser has no stream
            lines.nth(7).wait_for(timeout=20_000)
            time.sleep(0.5)  # anything doubled would have arrived by now
            assert shown() == [f"line {n}" for n in range(1, 9)]
            resumed = [r for r in relay.requests if f"/ui/jobs/{live}/events".encode() in r]
            assert any(b"last-event-id: 5" in r.lower() for r in resumed), resumed
            db.update_job(live, state="successful", finished=time.time())
            page.wait_for_selector("#job-state:text('successful')", timeout=10_000)
            check_a11y(page, "job-log")

            for name, path in (
                ("machine", "/ui/machines/pc-01"),
                ("jobs", "/ui/jobs"),
                ("tokens", "/ui/tokens"),
                ("error-unknown-machine", "/ui/machines/pc-99"),
            ):
                page.goto(base + path)
                check_a11y(page, name)
            assert page.locator("h1").inner_text() == "Unknown machine"

            page.goto(base + "/ui/tokens")
            page.fill("#t-name", "front desk")
            page.click("text=Make the token")
            secret = page.locator("#secret").input_value()
            assert secret.startswith("ggn_") and db.token(secret)["role"] == "viewer"
            check_a11y(page, "token-created")
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            browser.close()
