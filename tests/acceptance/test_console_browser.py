"""The web console in a real browser: Playwright driving the system's Chromium against a real ``serve``.

One gateway (on a database of the test cluster) and one browser for the module; each test gets a fresh
browser context (an empty sessionStorage) whose every request is intercepted: anything not addressed to
127.0.0.1 is aborted and recorded, and the test fails if there was any. Page errors (an exception in a
module, a failed import) fail the test too.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import csv
import datetime as dt
import io
import json
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from gateway.auth.keys import insert_key
from tests.acceptance.cli_process import GatewayProcess

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does): the browser tests need it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

KEY = "console-test-admin-key-" + "k" * 24
TIMEOUT_MS = 15_000
XSS_NAME = """<img src=x onerror="alert('name')">"&'<script>alert(1)</script>"""
XSS_VALUE = """<img src=x onerror=alert(2)><script>alert(3)</script>"""


class Gateway:
    def __init__(self, url: str, database_url: str) -> None:
        self.url = url
        self.database_url = database_url

    def key(self, scope: str) -> str:
        """A new key of the default endpoint with this scope."""
        secret = f"console-test-{scope}-{uuid.uuid4().hex}"

        async def insert() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                await insert_key(conn, secret, scope=scope)
            finally:
                await conn.close()

        with ThreadPoolExecutor(1) as thread:  # Playwright's sync API runs its own loop in this thread
            thread.submit(asyncio.run, insert()).result()
        return secret

    def call(self, method: str, path: str, body: bytes | dict | None = None,
             content_type: str = "application/json") -> tuple[int, bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.call(method, path, body)
        assert status == 200, (status, answer)
        return json.loads(answer)["result"]

    def segment_with(self, name: str, csv_text: str) -> str:
        segment_id = self.json("POST", "/v1/segments", {"name": name})["segmentId"]
        status, answer = self.call("POST", f"/v1/segments/{segment_id}/data", csv_text.encode(), "text/csv")
        assert status == 200, answer
        return segment_id


@pytest.fixture(scope="module")
def gateway(main_cluster):
    name = asyncio.run(main_cluster.create_database(migrated=True))
    process = GatewayProcess("serve", "--port", "0", "--host", "127.0.0.1",
                             env={"GATEWAY_DATABASE_URL": main_cluster.url(name), "GATEWAY_API_KEY": KEY,
                                  "GATEWAY_LOG_LEVEL": "WARNING"})
    try:
        yield Gateway(process.wait_listening(), main_cluster.url(name))
    finally:
        process.stop()  # its database goes with the test cluster


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


class Watch:
    """What a page did that a test must see: requests leaving 127.0.0.1, page errors, dialogs."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []


@pytest.fixture
def page(browser, gateway, request):
    width = getattr(request, "param", 1000)
    context = browser.new_context(viewport={"width": width, "height": 800}, accept_downloads=True)
    watch = Watch()

    def route(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            watch.outside.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))

    def dialog(dialog):
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dialog)
    page.watch = watch
    yield page
    context.close()
    assert watch.outside == [], "requests left 127.0.0.1"
    assert watch.dialogs == [], "a dialog opened"


def sign_in(page, gateway, key: str = KEY, who: str = "default · admin") -> None:
    """By keyboard only: the key field has the focus when the page opens; Enter submits."""
    page.goto(gateway.url + "/ui/")
    page.wait_for_selector("#api-key:focus")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#audience-table")
    assert page.text_content("#who") == who
    assert key not in page.url


def cells(page, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{table} tbody tr",
                                     "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_push_see_the_audience_its_size_members_history_and_rejects(page, gateway):
    segment_id = gateway.segment_with("Newsletter", "Email,Name,Country\nann@example.com,Ann,US\n"
                                      "bob@example.com,Bob,DE\ncy@example.com,Cy\ndee@example.com,Dee,US\n")
    sign_in(page, gateway)
    page.fill("#audience-search", "newsl")
    sync_api.expect(page.locator("#audience-table tbody tr")).to_have_count(1)
    [row] = cells(page, "#audience-table")
    assert row[:3] == ["Newsletter", segment_id, "Contact Lists"] and row[3:5] == ["active", "3"]
    page.click("#audience-table a")
    page.wait_for_selector("#upload-table")
    assert page.text_content("#audience-size") == "3"
    assert page.url.endswith(f"#/audiences/{segment_id}")
    assert cells(page, "#sample-table") == [["ann@example.com", "Ann", "US"], ["bob@example.com", "Bob", "DE"],
                                            ["dee@example.com", "Dee", "US"]]
    [upload] = cells(page, "#upload-table")
    assert upload[1] == "ADD" and upload[4:7] == ["4", "1", "3"]
    page.click("#upload-table button.show-rejects")
    page.wait_for_selector("#rejects-table")
    assert cells(page, "#rejects-table") == [["4", "expected 3 fields, got 2", "cy@example.com,Cy"]]
    with page.expect_download() as info:
        page.click("#download-rejects")
    saved = Path(info.value.path()).read_text()
    assert list(csv.reader(io.StringIO(saved))) == [["line", "reason", "raw"],
                                                     ["4", "expected 3 fields, got 2", "cy@example.com,Cy"]]
    assert page.watch.errors == []


def test_data_is_text_never_markup(page, gateway):
    """A segment name and a CSV value that are HTML and script render as their text: no element, no dialog."""
    segment_id = gateway.segment_with(XSS_NAME, f'Email,Name\nx@example.com,"{XSS_VALUE}"\n')
    sign_in(page, gateway)
    page.fill("#audience-search", "<img")
    sync_api.expect(page.locator("#audience-table tbody tr")).to_have_count(1)
    assert cells(page, "#audience-table")[0][0] == XSS_NAME
    page.click("#audience-table a")
    page.wait_for_selector("#sample-table")
    assert page.text_content("#audience-name") == XSS_NAME
    assert page.input_value("#edit-name") == XSS_NAME
    assert cells(page, "#sample-table") == [["x@example.com", XSS_VALUE]]
    assert page.eval_on_selector_all("main img, main script", "found => found.length") == 0
    page.go_back()
    page.wait_for_selector("#audience-table")
    assert page.watch.dialogs == [] and page.watch.errors == []
    assert gateway.json("GET", f"/api/segments/{segment_id}")["name"] == XSS_NAME


def test_csp_is_sent_and_enforced(page, gateway):
    response = page.goto(gateway.url + "/ui/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    page.wait_for_selector("#api-key")
    # an injected inline script does not run (the policy allows scripts from the gateway's files only)
    ran = page.evaluate("""() => { const s = document.createElement('script');
                                   s.textContent = 'window.injected = true'; document.body.append(s);
                                   return window.injected === true; }""")
    assert ran is False


@pytest.mark.parametrize("page", [320], indirect=True)
def test_readable_at_320_px(page, gateway):
    """At 320 px the page does not scroll sideways (wide tables scroll inside their own box)."""
    gateway.segment_with("A rather long audience name that has to wrap on a narrow phone screen",
                         "Email,FirstName,LastName,Country,City\nnarrow@example.com,Nora,Row,US,Springfield\n")
    sign_in(page, gateway)
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    page.click("#audience-table a >> nth=-1")
    page.wait_for_selector("#upload-table")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    assert page.watch.errors == []


def test_a_definition_with_a_typo_then_fixed_run_into_its_queries_audience(page, gateway):
    status, _ = gateway.call("GET", "/api/segment/definitions")
    if status == 404:
        pytest.skip("this gateway has no /api/segment/definitions yet (issue 16)")
    source = gateway.segment_with("Shoppers", "Email,Name,Country\nann@example.com,Ann,US\n"
                                  "bob@example.com,Bob,DE\ndee@example.com,Dee,US\n")
    previews = gateway.call("POST", "/api/preview", {"predicateExpression": "Country = \"US\"",
                                                      "predicateType": "pql/text", "sources": [source]})[0] != 404
    sign_in(page, gateway)
    page.click("nav >> text=Definitions")
    page.click("#new-definition")
    page.fill("#def-name", "US shoppers")
    page.fill("#def-sources", source)
    typo = 'Country = "US" adn Name = "Ann"'
    page.fill("#def-expression", typo)
    page.wait_for_selector("#def-error-mark")
    position = typo.index("adn")
    assert page.text_content(".def-error").startswith("unexpected 'adn'")
    assert page.get_attribute(".def-error", "data-position") == str(position)
    assert page.text_content("#def-mirror") == typo
    assert page.evaluate("document.getElementById('def-error-mark').previousSibling.textContent") == typo[:position]
    assert page.text_content("#def-error-mark") == "adn"
    page.fill("#def-expression", 'Country = "US"')
    page.wait_for_selector("#def-valid")
    assert page.query_selector("#def-error-mark") is None
    if previews:
        page.wait_for_selector("#estimate-figure")
        assert page.text_content("#estimate-figure strong") == "2"
    page.click("#def-save")
    page.wait_for_url("**/#/definitions/*")
    page.click("#def-run")
    page.wait_for_selector("#run-status", timeout=60_000)
    assert "SUCCEEDED" in page.text_content("#run-status")
    page.wait_for_selector("#definition-jobs-table")
    [job] = cells(page, "#definition-jobs-table")
    assert job[1] == "SUCCEEDED" and job[3:6] == ["2", "0", "0"]
    page.click("#run-audience")
    page.wait_for_selector("#sample-table")
    assert page.text_content("#audience-size") == "2"
    assert sorted(row[0] for row in cells(page, "#sample-table")) == ["ann@example.com", "dee@example.com"]
    page.click("nav >> text=Audiences")
    page.fill("#audience-search", "US shoppers")
    sync_api.expect(page.locator("#audience-table tbody tr")).to_have_count(1)
    [row] = cells(page, "#audience-table")
    assert row[2] == "Queries" and row[4] == "2"
    assert page.watch.errors == []


def test_jobs_schedules_and_throughput_pages_render(page, gateway):
    segment_id = gateway.segment_with("Exported", "Email\nexp@example.com\n")
    gateway.json("POST", "/api/export/jobs", {"filter": {"segments": [{"segmentId": segment_id}]}, "format": "csv"})
    sign_in(page, gateway)
    page.click("nav >> text=Jobs")
    page.wait_for_selector("#export-job-table button", timeout=30_000)  # the file of the job, once written
    with page.expect_download() as info:
        page.click("#export-job-table button")
    assert Path(info.value.path()).read_text().splitlines() == ["Email", "exp@example.com"]
    page.click("nav >> text=Throughput")
    page.wait_for_selector("#figure-rows svg")
    assert page.text_content("#figure-inflight strong") == "0.00"
    # rows pushed while the page samples /metrics show as a rate above zero at the next sample (every 2 s)
    rows = "".join(f"rate{n}-{'x' * 50}@example.com\n" for n in range(2000))  # about 0.14 MB
    gateway.segment_with("Throughput", "Email\n" + rows)
    sync_api.expect(page.locator("#figure-rows strong")).not_to_have_text("0.00", timeout=10_000)
    sync_api.expect(page.locator("#figure-bytes strong")).not_to_have_text("0.00", timeout=10_000)
    page.click("nav >> text=Schedules")
    page.wait_for_selector("#schedules")
    assert page.watch.errors == []


def test_the_cron_field_shows_the_next_runs_as_you_type_and_why_a_cron_is_refused(page, gateway):
    """The schedule form asks POST /api/config/schedules/validate (the scheduler's own cron code) as the
    user types: the next runs under the field, or the error; a cron that is markup stays text."""
    sign_in(page, gateway)
    page.click("nav >> text=Schedules")
    sync_api.expect(page.locator("#cron-next-runs li")).to_have_count(5)  # the form's default cron
    field = page.locator("#schedule-cron")
    field.fill("")
    field.press_sequentially("30 7 * * *", delay=30)
    answer = gateway.json("POST", "/api/config/schedules/validate", {"schedule": "30 7 * * *", "count": 5})
    shown = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
             for ms in answer["nextRunTimes"]]
    assert len(shown) == 5 and all(text.endswith(" 07:30:00 UTC") for text in shown)
    sync_api.expect(page.locator("#cron-next-runs li")).to_have_text(shown)
    field.fill("")
    field.press_sequentially("every day", delay=30)
    refused = gateway.json("POST", "/api/config/schedules/validate", {"schedule": "every day"})
    assert refused["valid"] is False
    sync_api.expect(page.locator("#cron-runs .cron-error")).to_have_text(refused["errors"][0]["message"])
    assert page.query_selector("#cron-next-runs") is None
    field.fill(XSS_VALUE)
    sync_api.expect(page.locator("#cron-runs .cron-error")).to_contain_text(XSS_VALUE)
    assert page.eval_on_selector_all("main img, main script", "found => found.length") == 0
    field.fill("0 0 12 1 1 ? 2030-2031")  # fewer runs than asked: the two it has
    sync_api.expect(page.locator("#cron-next-runs li")).to_have_text(["2030-01-01 12:00:00 UTC",
                                                                     "2031-01-01 12:00:00 UTC"])
    assert page.watch.errors == [] and page.watch.dialogs == []


def test_what_a_key_may_do_decides_what_the_page_offers(page, gateway):
    """A write key sees audiences without the admin actions and definitions without the editor; a read key
    (refused /api, whoami says read) gets the /v1 list; a wrong key stays on the sign-in form."""
    segment_id = gateway.segment_with("Scoped", "Email\nscoped@example.com\n")
    sign_in(page, gateway, gateway.key("write"), "default · write")
    page.goto(f"{gateway.url}/ui/#/audiences/{segment_id}")
    page.wait_for_selector("#upload-table")
    assert page.query_selector("#admin") is None
    page.click("nav >> text=Definitions")
    page.wait_for_selector("h1 >> text=Definitions")
    assert page.query_selector("#new-definition") is None
    page.click("#sign-out")
    page.wait_for_selector("#api-key")
    sign_in(page, gateway, gateway.key("read"), "default · read")
    headers = page.eval_on_selector_all("#audience-table th", "cells => cells.map(c => c.textContent)")
    assert headers == ["Name", "Id", "Type"]
    page.click("nav >> text=Audiences")
    page.click("#sign-out")
    page.fill("#api-key", "not-a-key-of-this-gateway-0123456789")
    page.press("#api-key", "Enter")
    page.wait_for_selector("#sign-in >> xpath=.. >> .error")
    assert page.text_content("main .error") == "This key is not valid."
    assert page.evaluate("sessionStorage.length") == 0 and page.context.cookies() == []
    assert page.watch.errors == []


def test_admin_renames_describes_deactivates_and_deletes(page, gateway):
    segment_id = gateway.segment_with("To rename", "Email\nrename@example.com\n")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/ui/#/audiences/{segment_id}")
    page.wait_for_selector("#upload-table")
    page.fill("#edit-name", "Renamed")
    page.fill("#edit-description", "described in the console")
    page.click("#admin button[type=submit]")
    page.wait_for_selector('#audience-name >> text="Renamed"')
    segment = gateway.json("GET", f"/api/segments/{segment_id}")
    assert (segment["name"], segment["description"]) == ("Renamed", "described in the console")
    page.click("#toggle-status")
    page.wait_for_selector('#toggle-status >> text="Activate"')
    assert gateway.json("GET", f"/api/segments/{segment_id}")["status"] == "inactive"
    page.click("#delete-audience")
    assert gateway.json("GET", f"/api/segments/{segment_id}")["status"] == "inactive"  # the first press only arms
    page.click("#delete-audience >> text=Confirm delete")
    page.wait_for_selector("#audience-table")
    assert gateway.json("GET", f"/api/segments/{segment_id}")["status"] == "deleted"
    assert page.watch.errors == []


def test_keyboard_alone_reaches_an_audience_and_the_sections(page, gateway):
    gateway.segment_with("By keyboard", "Email\nkeys@example.com\n")
    sign_in(page, gateway)

    def tab_to(selector: str) -> None:
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#audience-table a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#upload-table")
    tab_to("nav a[href='#/definitions']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#definition-table, #new-definition")
    assert page.watch.errors == []
