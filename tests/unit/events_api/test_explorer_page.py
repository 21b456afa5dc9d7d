"""The explorer page as the events API serves it, and ``GET /v1/me`` (no broker, no browser).

The page itself is exercised in a real browser by
``tests/integration/events_api/test_explorer_browser.py``; here: what the server sends
(files, security headers, caching), who ``/v1/me`` says a key is, and static checks of the
shipped files that keep the page safe by construction.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from events_api_server import ApiUnderTest, api_under_test

from events_api.explorer import CSP, mount_explorer


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiUnderTest]:
    async with api_under_test(tmp_path) as under_test:
        yield under_test


def shipped(name: str) -> str:
    return resources.files("events_api.explorer").joinpath(name).read_text()


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/explorer", "text/html", "changefeed explorer"),
        ("/explorer/app.js", "text/javascript", "sessionStorage"),
        ("/explorer/style.css", "text/css", "focus-visible"),
    ],
)
async def test_the_page_files_with_their_security_headers(
    api: ApiUnderTest, path: str, content_type: str, needle: str
) -> None:
    response = await api.client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert needle in await response.text()
    headers = response.headers
    assert headers["Content-Security-Policy"] == CSP
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ):
        assert directive in headers["Content-Security-Policy"]
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    assert "Set-Cookie" not in headers


async def test_the_page_names_its_script_and_style_by_version(api: ApiUnderTest) -> None:
    """Cached for good under their digest; a changed file gets another name."""
    page = await (await api.client.get("/explorer")).text()
    for name in ("app.js", "style.css"):
        match = re.search(rf'"(/explorer/{re.escape(name)}\?v=([0-9a-f]{{32}}))"', page)
        assert match, name
        versioned = await api.client.get(match.group(1))
        assert versioned.status == 200
        assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert versioned.headers["ETag"] == f'"{match.group(2)}"'
        assert (
            await versioned.read()
            == resources.files("events_api.explorer").joinpath(name).read_bytes()
        )
        stale = await api.client.get(f"/explorer/{name}?v=0123")
        assert stale.headers["Cache-Control"] == "no-cache"


async def test_a_current_copy_is_revalidated_with_304(api: ApiUnderTest) -> None:
    first = await api.client.get("/explorer/app.js")
    etag = first.headers["ETag"]
    again = await api.client.get("/explorer/app.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    other = await api.client.get("/explorer/app.js", headers={"If-None-Match": '"stale"'})
    assert other.status == 200


async def test_the_page_needs_no_key(api: ApiUnderTest) -> None:
    response = await api.client.get("/explorer/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/explorer"


@pytest.mark.parametrize("redirect_root", [True, False])
async def test_slash_leads_to_the_page_only_when_asked(redirect_root: bool) -> None:
    """Inside a worker ``/`` is Faust's; the standalone server redirects it to the page."""
    root = web.Application()
    mount_explorer(root, redirect_root=redirect_root)
    async with TestClient(TestServer(root)) as client:
        response = await client.get("/", allow_redirects=False)
        if redirect_root:
            assert response.status == 302 and response.headers["Location"] == "/explorer"
        else:
            assert response.status == 404
        assert (await client.get("/explorer")).status == 200


@pytest.mark.parametrize(
    ("label", "tenant", "role", "user"),
    [
        ("acme-admin", "acme", "admin", None),
        ("acme-u1", "acme", "user", "u-1"),
        ("globex-admin", "globex", "admin", None),
    ],
)
async def test_me_says_who_the_key_is(
    api: ApiUnderTest, label: str, tenant: str, role: str, user: str | None
) -> None:
    status, body = await api.get("/v1/me", label)
    assert status == 200, body
    record = api.records[label]
    assert body == {
        "key_id": record.key_id,
        "key_name": label,
        "tenant_id": tenant,
        "role": role,
        "user_id": user,
        "retention_ms": 7 * 86_400_000,
    }
    assert api.keys[label] not in str(body) and "sha256" not in str(body)


async def test_me_needs_a_valid_key_and_takes_no_parameters(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/me", None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.get("/v1/me", "acme-admin", tenant="globex")
    assert status == 400 and "tenant" in body["error"]["message"]


async def test_me_is_in_the_openapi_document(api: ApiUnderTest) -> None:
    doc = await (await api.client.get("/openapi.json")).json()
    assert doc["paths"]["/v1/me"]["get"]["operationId"] == "getMe"
    assert set(doc["components"]["schemas"]["Me"]["required"]) == {
        "key_id",
        "key_name",
        "tenant_id",
        "role",
        "user_id",
        "retention_ms",
    }


def test_the_script_never_turns_data_into_html() -> None:
    script = shipped("app.js")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "createContextualFragment",
        "localStorage",
        "document.cookie",
        "console.",
    ):
        assert sink not in script, sink
    # links are only ever the page's own routes
    assert re.findall(r'setAttribute\("href"', script) == ['setAttribute("href"']
    assert 'if (!text.startsWith("#/")) throw' in script


def test_the_page_has_no_inline_code_and_no_third_party_resource() -> None:
    page = shipped("index.html")
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/explorer/app.js" defer>']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
    for name in ("index.html", "app.js", "style.css"):
        text = shipped(name)
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text
