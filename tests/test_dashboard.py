"""The dashboard, as a person meets it: a real `dynosim run`, its one-time link, and Debian's chromium
driven by Playwright (the system browser through `executable_path`; nothing downloaded). And what the
HTTP side refuses: no session, a used or wrong token, another Host, a change without this Origin, a
dyno that is not there; a port taken is one line and the app runs on."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DynosimRun, make_app, run_dynosim

pytestmark = pytest.mark.timeout(240)

URL = r"http://127\.0\.0\.1:(\d+)/\?token=[\w-]+"
LINK = rf"dashboard: ({URL}) \(a one-time link"
UP = r"heroku\[web\.1\]: State changed from starting to up"
SERVER = """
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/upload":  # a user's upload, kept on the dyno's own disk: lost at the restart
            os.makedirs("uploads", exist_ok=True)
            with open("uploads/avatar.png", "wb") as f:
                f.write(b"\\x89PNG" + b"0" * 2000)
        if url.path == "/say":
            print("app says:", parse_qs(url.query)["m"][0], flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

time.sleep(2)  # a boot that takes a moment, as a real app's does: long enough to see "starting"
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("DYNOSIM_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH, and DYNOSIM_REQUIRE_BROWSER is set (CI installs Debian's chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return found


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


class Session:
    """A client with the dashboard's cookie, as the browser holds it after the link."""

    def __init__(self, link: str) -> None:
        self.base = link.split("?", maxsplit=1)[0]
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        with self.opener.open(link, timeout=10) as page:  # 303 to /, the cookie set on the way
            assert page.status == 200 and page.url == self.base

    def call(self, path: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "Origin": self.base.rstrip("/")} if body is not None else {}
        request = urllib.request.Request(self.base.rstrip("/") + path, data=data, headers={**sent, **(headers or {})})
        try:
            with self.opener.open(request, timeout=10) as response:
                text = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            text, status = error.read(), error.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(
        tmp_path,
        procfile="web: python server.py\nworker: python worker.py\n",
        server__py=SERVER,
        __env="SECRET_KEY=s3cret-value\n",
    )


@pytest.fixture
def running(app: Path, dynosim: type[DynosimRun]) -> Iterator[tuple[DynosimRun, str]]:
    run = dynosim(app, "--dashboard-port", "0")
    link = run.wait_for(LINK).group(1)
    run.wait_for(UP)
    yield run, link
    started = time.monotonic()
    assert run.stop() == 0
    # a browser tab's streams open to the very end do not hold the run's shutdown
    assert time.monotonic() - started < 20


def test_every_request_needs_a_session_from_a_one_time_link(running: tuple[DynosimRun, str]) -> None:
    _, link = running
    base = link.split("?", maxsplit=1)[0]
    for url in (base, base + "api/ps", base + "?token=not-the-token", base + "static/dashboard.js"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(url)
        assert refused.value.code == 403 and refused.value.read() == b"Forbidden"  # and nothing else
    session = Session(link)
    status, ps = session.call("/api/ps")
    assert status == 200 and {"web.1", "worker.1"} <= {row["name"] for row in ps["dynos"]}
    with pytest.raises(urllib.error.HTTPError) as used:  # the link worked once
        get(link)
    assert used.value.code == 403
    # a page on another name that resolves to 127.0.0.1 (DNS rebinding) carries its own Host: refused
    assert session.call("/api/ps", headers={"Host": "evil.example:80"})[0] == 403


def test_changes_need_this_origin_and_json_and_a_missing_dyno_is_a_404(running: tuple[DynosimRun, str]) -> None:
    run, link = running
    session = Session(link)
    no_origin = {"Origin": ""}
    assert session.call("/api/maintenance", {"on": True}, headers=no_origin)[0] == 403
    assert session.call("/api/maintenance", {"on": True}, headers={"Origin": "http://evil.example"})[0] == 403
    assert session.call("/api/maintenance", {"on": True}, headers={"Content-Type": "text/plain"})[0] == 403
    status, body = session.call("/api/maintenance", {"on": True})
    assert status == 200 and body == {"maintenance": True}
    with pytest.raises(urllib.error.HTTPError) as h80:  # the router's page, as `maintenance:on` gives
        get(f"http://127.0.0.1:{run.port}/")
    assert h80.value.code == 503
    assert session.call("/api/maintenance", {"on": "yes"}) == (
        400,
        {"error": 'maintenance takes {"on": true} or {"on": false}'},
    )
    status, body = session.call("/api/dynos/web.9")
    assert status == 404 and body["error"].startswith("no dyno web.9 is running")
    status, body = session.call("/api/restart", {"target": "web.9"})
    assert status == 404 and "web.9" in body["error"]
    assert session.call("/api/metrics?window=soon")[0] == 400


def test_dynosim_dashboard_gives_a_new_link(app: Path, running: tuple[DynosimRun, str]) -> None:
    _, link = running
    printed = run_dynosim(app, "dashboard", "--url")
    assert printed.returncode == 0, printed.stderr
    fresh = printed.stdout.strip()
    assert re.fullmatch(URL, fresh) and fresh != link
    Session(fresh)


def test_a_taken_port_is_one_line_and_the_app_runs_on(app: Path, dynosim: type[DynosimRun]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = dynosim(app, "--dashboard-port", str(port))
        said = run.wait_for(r"dashboard:")
        assert said.string == (
            f" !     dashboard: cannot listen on 127.0.0.1:{port} (address already in use); the app runs without "
            "it. Give it another port with --dashboard-port N, or turn it off with --no-dashboard"
        )
        run.wait_for(UP)
        assert get(f"http://127.0.0.1:{run.port}/") == b"ok"
        missing = run_dynosim(app, "dashboard", "--url")
        assert missing.returncode != 0 and missing.stderr.count("\n") == 1
        assert "this run has no dashboard" in missing.stderr and "--dashboard-port" in missing.stderr
        assert run.stop() == 0


def test_a_person_sees_the_app_live_in_chromium(running: tuple[DynosimRun, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    run, link = running
    router = f"http://127.0.0.1:{run.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium())
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(link)
        assert page.url == link.split("?", maxsplit=1)[0]  # the token left the address bar

        # the formation, live
        web1 = page.locator('#formation tr[data-dyno="web.1"]')
        expect(web1.locator("td.state")).to_have_text("up")
        expect(page.locator('#formation tr[data-dyno="worker.1"] td.state')).to_have_text("up")

        # a line the app prints arrives on the page as it is printed
        get(f"{router}/say?m=hello-from-web")
        expect(page.locator("#logs")).to_contain_text("app[web.1]: app says: hello-from-web")

        # traffic: the memory and response-time charts get points
        for _ in range(20):
            get(f"{router}/")
        page.wait_for_function(
            "() => { const has = (name, ok) => window.dynosim.charts[name].data.slice(1).some(s => s.some(ok));"
            " return has('memory', v => v > 0) && has('response', v => v !== null) && has('throughput', v => v > 0); }",
            timeout=15000,
        )

        # a file a dyno writes shows in the ledger as what a restart would lose, with the fix
        get(f"{router}/upload")
        pending = page.locator('#ledger-pending tr[data-path="uploads/avatar.png"]')
        expect(pending).to_contain_text("web.1")
        expect(pending).to_contain_text("uploaded file")
        expect(pending).to_contain_text("object storage")
        expect(page.locator("#ledger-writes-count")).not_to_have_text("0")  # every write since boot, counted

        screenshot = tmp_path / "dashboard.png"  # CI keeps the test's folder as an artefact
        page.screenshot(path=str(screenshot), full_page=True)
        if os.environ.get("DYNOSIM_DASHBOARD_SCREENSHOT"):  # how docs/dashboard.png is made
            shutil.copy(screenshot, os.environ["DYNOSIM_DASHBOARD_SCREENSHOT"])

        # restart from the page: the state changes on it, and the upload moves to what restarts discarded
        page.locator('button[data-restart="web.1"]').click()
        expect(web1.locator("td.state")).not_to_have_text("up", timeout=10000)
        expect(web1.locator("td.state")).to_have_text("up", timeout=30000)
        expect(page.locator('#ledger-history tr[data-path="uploads/avatar.png"]')).to_contain_text("web.1")
        expect(page.locator('#formation tr[data-dyno="web.1"] td').nth(5)).to_contain_text("status")
        run.wait_for(r"heroku\[web\.1\]: Restarting")

        # scale from the page, as `ps:scale worker=2`
        page.locator('input[data-scale="worker"]').fill("2")
        page.locator('button[data-scale-apply="worker"]').click()
        expect(page.locator('#formation tr[data-dyno="worker.2"] td.state')).to_have_text("up", timeout=20000)
        run.wait_for(r"app\[api\]: Scaled to web@1:Standard-1X worker@2:Standard-1X")

        # config values stay hidden until asked for
        secret = page.locator('#config td[data-config-var="SECRET_KEY"]')
        expect(secret).to_have_text("••••••")
        page.locator('button[data-reveal="SECRET_KEY"]').click()
        expect(secret).to_have_text("s3cret-value")
        expect(page.locator("#releases")).to_contain_text("v1")
        assert not errors
        browser.close()
