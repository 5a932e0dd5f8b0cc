"""The web console's static routes (``/ui/``) and ``GET /api/whoami``: files served without a key, with the
console's security headers; nothing outside the console's own files; whoami answers the key's scope."""

import re

import pytest

from gateway.api.console import CONSOLE_DIR, CSP

EXPECTED_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "console.css": "text/css"}


async def test_the_page_and_its_files_need_no_key_and_carry_a_strict_csp(client):
    for path, content_type in {"/ui/": "text/html", **{f"/ui/{name}": kind
                                                        for name, kind in EXPECTED_TYPES.items()}}.items():
        response = await client.get(path)
        assert response.status == 200, path
        assert response.content_type == content_type, path
        policy = response.headers["Content-Security-Policy"]
        assert policy == CSP
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
            assert directive in policy, directive
        assert "unsafe" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_every_module_the_page_imports_is_served(client):
    """Each ES module named by an import (and the page's own script and stylesheet) answers 200: a missing
    file would leave a blank page."""
    seen, pending = set(), ["index.html"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = await client.get(f"/ui/{name}")
        assert response.status == 200, name
        text = await response.text()
        pending += re.findall(r'(?:from|src=|href=)\s*"\.?/?([\w.-]+\.(?:js|css))"', text)
    assert {"app.js", "api.js", "dom.js", "console.css", "audiences.js", "definitions.js"} <= seen


async def test_the_files_hold_no_inline_script_or_style_and_build_no_html_from_strings():
    """The CSP would block inline code anyway; data must never become markup (innerHTML and friends)."""
    index = (CONSOLE_DIR / "index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)", index) is None
    assert "<style" not in index and " style=" not in index and re.search(r"\son\w+=", index) is None
    for module in CONSOLE_DIR.glob("*.js"):
        text = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, (module.name, sink)
        assert re.search(r"https?://(?!www\.w3\.org/2000/svg)", text) is None, module.name  # no external request


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py",
                                  "/ui/dom.js/", "/ui/.hidden", "/ui/console.py"])
async def test_anything_else_under_ui_is_404(client, path):
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize("scope", ["read", "write", "admin"])
async def test_whoami_answers_the_keys_endpoint_and_scope(client, make_key, scope):
    response = await client.get("/api/whoami", headers=await make_key(scope, endpoint="acme"))
    assert response.status == 200
    assert (await response.json())["result"] == {"endpoint": "acme", "scope": scope}


async def test_whoami_refuses_no_key(client):
    response = await client.get("/api/whoami")
    assert response.status == 401
