"""Make the README's screenshots of the web console: ``python3 docs/console_screenshots.py``.

Starts a gateway on a fresh embedded PostgreSQL in a temporary directory, pushes ``examples/people.csv``,
defines and runs a definition, and photographs the main pages with Playwright driving /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
KEY = "screenshot-admin-key-" + "s" * 24


def call(url: str, method: str, path: str, body: bytes | dict | None = None, kind: str = "application/json"):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": kind})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["result"]


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "GATEWAY_DATA_DIR": data_dir, "GATEWAY_DATABASE_URL": "", "GATEWAY_API_KEY": KEY,
               "GATEWAY_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0"], env=env,
                                   stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            url = None
            while url is None:
                line = process.stdout.readline()
                if not line:
                    raise SystemExit("the gateway did not start")
                match = re.search(r"listening on (http://\S+)", line)
                url = match.group(1) if match else None
            people = call(url, "POST", "/v1/segments", {"name": "People"})["segmentId"]
            csv_file = (REPO / "examples" / "people.csv").read_bytes()
            call(url, "POST", f"/v1/segments/{people}/data", csv_file, "text/csv")
            definition = call(url, "POST", "/api/segment/definitions", {
                "name": "People in the US", "sources": [people],
                "expression": {"type": "PQL", "format": "pql/text", "value": 'Country = "US"'}})
            job = call(url, "POST", "/api/segment/jobs", {"segments": [{"segmentId": definition["id"]}]})
            deadline = time.monotonic() + 30
            while call(url, "GET", f"/api/segment/jobs/{job['id']}")["status"] != "SUCCEEDED":
                if time.monotonic() > deadline:
                    raise SystemExit("the segment job did not succeed")
                time.sleep(0.2)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1000, "height": 640})
                page.goto(url + "/ui/")
                page.fill("#api-key", KEY)
                page.press("#api-key", "Enter")
                page.wait_for_selector("#audience-table")
                page.screenshot(path=REPO / "docs" / "console-audiences.png")
                page.goto(f"{url}/ui/#/definitions/{definition['id']}")
                page.wait_for_selector("#definition-jobs-table")
                page.fill("#def-expression", 'Country = "US" adn LastName.startsWith("A")')
                page.wait_for_selector("#def-error-mark")
                page.set_viewport_size({"width": 1000, "height": 980})
                page.screenshot(path=REPO / "docs" / "console-definition.png")
                browser.close()
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
