"""The explorer page in a real browser, against a real worker with real events.

One ``changefeed worker`` (processors and events API) runs for the module; actions are
published to ``actions`` and become change events through the processors. Headless
Chromium (Debian's packages, driven by Selenium with ``/usr/bin/chromedriver``) signs in,
filters, pages, opens a change, a subject's timeline and a request, follows the live tail,
reads with a user key, and meets payloads written to inject script. Screenshots of the main
views (1280 px and a phone's width) are saved in the test's ``tmp_path`` and copied to
``test-artifacts/explorer/``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from events_api_harness import create_keys
from events_api_workers import http_get, wait_until
from explorer_browser import PHONE, browser_missing, fresh_profile, save_screenshot, start_chromium
from kafka import KafkaProducer
from worker_process import WorkerProcess

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.access.keys import Role
from schemas.action_contract import subject_key
from schemas.codec import default_codec

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

MISSING = browser_missing()
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
    pytest.mark.xdist_group("explorer"),  # one worker and one browser for the module
]

if MISSING is None:
    from selenium.common.exceptions import (
        NoAlertPresentException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

BULK = 120  # acme's bulk expense actions
SUBJECT = ("expense_report", "42")
XSS_ID = "x/<img src=x onerror=alert(1)>%2F"
XSS_TEXTS = (
    "<script>alert('title')</script>",
    "<img src=x onerror=alert(2)>",
    "javascript:alert(3)",
)
KEYS = {
    "admin": ("acme", Role.ADMIN, None),
    "u1": ("acme", Role.USER, "u-1"),
    "globex": ("globex", Role.ADMIN, None),
}


def now_us() -> int:
    return time.time_ns() // 1000


def action(
    event_id: str,
    subject: tuple[str, str],
    verb: str,
    version: int,
    payload: dict[str, Any] | None,
    *,
    tenant: str = "acme",
    user: str = "u-1",
    request_id: str | None = None,
    criticality: int = 3,
    code: int = 0,
    occurred_us: int | None = None,
) -> dict[str, Any]:
    subject_type, subject_id = subject
    past = {"create": "created", "update": "updated", "delete": "deleted"}[verb]
    return {
        "event_id": event_id,
        "request_id": request_id or f"req-{event_id}",
        "tenant_id": tenant,
        "action": verb,
        "event_type": f"{subject_type}:{past}",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "version": version,
        "occurred_at": occurred_us if occurred_us is not None else now_us(),
        "actor": {"user_id": user, "application_id": "expenses-web", "api_version": "v2"},
        "criticality": criticality,
        "code": code,
        "payload": None if payload is None else json.dumps(payload),
        "source": "/expenses/api",
    }


def the_actions() -> list[dict[str, Any]]:
    out = []
    for i in range(BULK):
        subject = ("expense", f"e-{i % 40}")
        verb = "create" if i < 40 else "update"
        out.append(
            action(
                f"bulk-{i}",
                subject,
                verb,
                i // 40 + 1,
                {
                    "id": subject[1],
                    "amount_cents": 1000 + i,
                    "status": ("draft", "submitted")[i % 2],
                },
                user="u-1" if i % 3 == 0 else "u-2",
                criticality=i % 6,
                code=10_001 if i % 5 == 0 else 0,
                request_id="req-batch-7" if i == 100 else None,
            )
        )
    t0 = now_us()
    report = {
        "title": "Client visit, Lyon",
        "status": "draft",
        "amount_cents": 12000,
        "password": "hunter2",
        "lines": [{"what": "train", "cents": 9000}, {"what": "lunch", "cents": 3000}],
    }
    out.append(action("r-1", SUBJECT, "create", 1, report, occurred_us=t0))
    report2 = {**report, "status": "submitted", "password": "hunter3"}
    out.append(action("r-2", SUBJECT, "update", 2, report2, occurred_us=t0 + 10))
    report3 = {
        **report2,
        "status": "approved",
        "amount_cents": 12500,
        "lines": [{"what": "train", "cents": 9500}, {"what": "lunch", "cents": 3000}],
    }
    out.append(
        action(
            "r-3",
            SUBJECT,
            "update",
            3,
            report3,
            user="u-2",
            criticality=1,
            request_id="req-batch-7",
            occurred_us=t0 + 20,
        )
    )
    late = {**report, "status": "rejected"}
    out.append(action("r-late", SUBJECT, "update", 2, late, occurred_us=t0 + 15))
    xss = {"title": XSS_TEXTS[0], "comment": XSS_TEXTS[1], "website": XSS_TEXTS[2]}
    out.append(action("xss-1", ("expense_report", XSS_ID), "create", 1, xss, user="u-1"))
    for i in range(5):
        out.append(
            action(f"globex-{i}", ("invoice", f"g-{i}"), "create", 1, {"n": i}, tenant="globex")
        )
    return out


def publish(settings: Settings, actions: list[dict[str, Any]]) -> None:
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        for record in actions:
            key = subject_key(record["tenant_id"], record["subject_type"], record["subject_id"])
            producer.send(
                settings.topic("actions"),
                key=key.encode(),
                value=codec.encode("changefeed.ApiAction", record),
            )
        producer.flush()
    finally:
        producer.close()


@dataclass
class World:
    settings: Settings
    worker: WorkerProcess
    keys: dict[str, str]

    @property
    def page_url(self) -> str:
        return f"{self.worker.base_url}/explorer"

    def listed(self, label: str, **params: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"limit": "1000", **params})
        status, _, body = http_get(
            f"{self.worker.base_url}/v1/events?{query}", {"X-Api-Key": self.keys[label]}
        )
        assert status == 200, body
        events: list[dict[str, Any]] = json.loads(body)["events"]
        return events


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    unique = uuid.uuid4().hex[:10]
    base = tmp_path_factory.mktemp("explorer")
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=base / "worker",
        broker=broker_settings,
    )
    ensure_topics(settings)
    keys = create_keys(settings, KEYS)
    worker = WorkerProcess(settings, base).start()
    try:
        worker.wait_ready(180)
        actions = the_actions()
        publish(settings, actions)
        running = World(settings, worker, keys)
        acme = sum(a["tenant_id"] == "acme" for a in actions)
        wait_until(
            lambda: len(running.listed("admin")) == acme and len(running.listed("globex")) == 5,
            120,
            f"the {acme} acme changes to be listed; log: {worker.log_path}",
        )
        yield running
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def driver(world: World) -> Iterator[WebDriver]:
    profile = fresh_profile()
    browser = start_chromium(profile)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(driver: WebDriver, world: World) -> WebDriver:
    """The explorer, signed out, at 1280 px."""
    driver.get(world.page_url)
    driver.execute_script("sessionStorage.clear()")
    driver.get(world.page_url + "#/events")
    driver.refresh()
    wait_for(driver, lambda d: d.find_element(By.ID, "signin-view").is_displayed())
    return driver


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], Any], timeout_s: float = 15.0
) -> Any:
    return WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException,),
    ).until(condition)


def sign_in(driver: WebDriver, key: str) -> None:
    box = driver.find_element(By.ID, "api-key")
    box.clear()
    box.send_keys(key, Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "identity").is_displayed())
    wait_feed(driver)


def wait_feed(driver: WebDriver) -> list[WebElement]:
    def loaded(d: WebDriver) -> bool:
        summary = d.find_element(By.ID, "feed-summary").text
        shown = d.find_element(By.ID, "feed-view").is_displayed()
        return bool(summary) and summary != "Loading…" and shown

    wait_for(driver, loaded)
    return rows(driver)


def rows(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#feed-table tbody tr")


def row_ids(driver: WebDriver) -> list[str]:
    return [r.get_attribute("data-change-id") for r in rows(driver)]


def no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_sign_in_filter_and_page(page: WebDriver, world: World, tmp_path: Path) -> None:
    driver = page
    save_screenshot(driver, tmp_path, "signin-1280")
    sign_in_box = driver.find_element(By.ID, "api-key")
    sign_in_box.send_keys("cf_0123456789abcdef_" + "A" * 43, Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "signin-error").is_displayed())
    assert "refused" in driver.find_element(By.ID, "signin-error").text

    key = world.keys["admin"]
    sign_in(driver, key)
    assert driver.find_element(By.ID, "who-tenant").text == "acme"
    assert driver.find_element(By.ID, "who-role").text == "admin"
    # the key is kept for the tab only: not in the URL, not in a cookie, not on the page
    assert key not in driver.current_url
    assert driver.execute_script("return document.cookie") == ""
    assert (
        driver.execute_script("return sessionStorage.getItem('changefeed.explorer.apiKey')") == key
    )
    assert driver.execute_script("return localStorage.length") == 0
    assert key not in driver.page_source

    # newest first, 100 a page; every event of the tenant and nothing of another
    newest = world.listed("admin", order="desc")
    assert row_ids(driver) == [e["change_id"] for e in newest[:100]]
    older = len(newest) - 100
    assert f"{older} older" in driver.find_element(By.ID, "feed-summary").text
    save_screenshot(driver, tmp_path, "feed-1280")
    save_screenshot(driver, tmp_path, "feed-phone", PHONE)
    save_screenshot(driver, tmp_path, "feed-phone-screen", PHONE, full_page=False)

    # filter: an event type pattern and criticalities, from the form
    driver.find_element(By.ID, "f-event-type").send_keys("expense:*")
    for level in ("1", "2"):
        driver.find_element(By.CSS_SELECTOR, f'input[name="criticality"][value="{level}"]').click()
    driver.find_element(By.ID, "apply-filters").click()
    wait_for(
        driver, lambda d: "criticality=1%2C2" in d.current_url or "criticality=1,2" in d.current_url
    )
    wait_feed(driver)
    wanted = world.listed("admin", order="desc", event_type="expense:*", criticality="1,2")
    assert wanted and row_ids(driver) == [e["change_id"] for e in wanted]
    for row in rows(driver):
        assert row.find_element(By.CSS_SELECTOR, ".event-link").text.startswith("expense:")

    # page by 25 with the API's cursors: older, older, newer
    driver.find_element(By.ID, "clear-filters").click()
    wait_for(driver, lambda d: d.current_url.endswith("#/events"))
    wait_feed(driver)
    driver.find_element(By.CSS_SELECTOR, '#f-limit option[value="25"]').click()
    driver.find_element(By.ID, "apply-filters").click()
    wait_for(driver, lambda d: len(rows(d)) == 25)
    first = row_ids(driver)
    assert first == [e["change_id"] for e in newest[:25]]
    driver.find_element(By.ID, "page-older").click()
    wait_for(driver, lambda d: row_ids(d) == [e["change_id"] for e in newest[25:50]])
    assert driver.find_element(By.ID, "page-number").text == "Page 2"
    driver.find_element(By.ID, "page-older").click()
    wait_for(driver, lambda d: row_ids(d) == [e["change_id"] for e in newest[50:75]])
    driver.find_element(By.ID, "page-newer").click()
    wait_for(driver, lambda d: row_ids(d) == [e["change_id"] for e in newest[25:50]])

    # a bad time is a clear message, not a request
    driver.find_element(By.ID, "f-start").send_keys("yesterday-ish")
    driver.find_element(By.ID, "apply-filters").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "is not a time" in driver.find_element(By.ID, "error").text

    driver.find_element(By.ID, "sign-out").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "signin-view").is_displayed())
    assert driver.execute_script("return sessionStorage.length") == 0
    assert rows(driver) == []


def test_open_a_change_with_the_keyboard_and_see_its_diff(
    page: WebDriver, world: World, tmp_path: Path
) -> None:
    driver = page
    sign_in(driver, world.keys["admin"])
    driver.get(world.page_url + "#/events?subject_type=expense_report&subject_id=42")
    wait_for(driver, lambda d: len(rows(d)) == 4)
    approved = next(e for e in world.listed("admin", subject_id="42") if e["version"] == 3)

    # keyboard: tab to the change's link (focus visible), Enter opens it
    link = driver.find_element(
        By.CSS_SELECTOR, f'tr[data-change-id="{approved["change_id"]}"] a.event-link'
    )
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(80):
        if driver.switch_to.active_element == link:
            break
        driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element == link, "the change link is reachable with Tab"
    outline = driver.execute_script(
        "const s = getComputedStyle(document.activeElement);return [s.outlineStyle, s.outlineWidth]"
    )
    assert outline[0] != "none" and outline[1] != "0px", outline
    link.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "change-view").is_displayed())
    wait_for(
        driver, lambda d: d.find_element(By.ID, "change-title").text == "expense_report:updated"
    )
    assert driver.switch_to.active_element == driver.find_element(By.ID, "change-title")

    changed = set(approved["field_changes"])
    assert {"/status", "/amount_cents", "/lines/0/cents"} <= changed
    for pane in ("change-previous", "change-current"):
        marked = {
            m.get_attribute("data-path")
            for m in driver.find_elements(By.CSS_SELECTOR, f"#{pane} mark.changed")
        }
        assert changed <= marked, (pane, changed, marked)
        assert "/title" not in marked and "/lines/1/cents" not in marked
    current_status = driver.find_element(
        By.CSS_SELECTOR, '#change-current mark[data-path="/status"]'
    )
    assert '"approved"' in current_status.text
    previous_status = driver.find_element(
        By.CSS_SELECTOR, '#change-previous mark[data-path="/status"]'
    )
    assert '"submitted"' in previous_status.text
    paths = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#change-paths code.path")]
    assert set(paths) == changed
    # masked values show as masked, never in clear
    assert driver.find_elements(By.CSS_SELECTOR, "#change-current .badge-masked")
    assert "hunter" not in driver.page_source
    save_screenshot(driver, tmp_path, "change-1280")
    save_screenshot(driver, tmp_path, "change-phone", PHONE)

    # the request's other changes
    driver.find_element(By.ID, "link-request").click()
    wait_for(
        driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#request-table tbody tr")) == 2
    )
    subjects = {
        r.find_element(By.CSS_SELECTOR, ".subject-id").text
        for r in driver.find_elements(By.CSS_SELECTOR, "#request-table tbody tr")
    }
    assert subjects == {"42", "e-20"}
    driver.back()
    wait_for(driver, lambda d: d.find_element(By.ID, "change-view").is_displayed())

    # the late change is marked
    late = next(e for e in world.listed("admin", subject_id="42") if e["late"])
    driver.get(world.page_url + f"#/change/{late['change_id']}")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#change-badges .badge-late"))


def test_a_subjects_timeline(page: WebDriver, world: World, tmp_path: Path) -> None:
    driver = page
    sign_in(driver, world.keys["admin"])
    some = world.listed("admin", subject_id="42")[0]
    driver.get(world.page_url + f"#/change/{some['change_id']}")
    wait_for(driver, lambda d: d.find_element(By.ID, "link-subject").is_displayed())
    driver.find_element(By.ID, "link-subject").click()
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline li.step")) == 4)
    assert driver.find_element(By.ID, "subject-title").text == "expense_report 42"
    steps = driver.find_elements(By.CSS_SELECTOR, "#timeline li.step")
    sequences = [int(s.get_attribute("data-sequence")) for s in steps]
    assert sequences == sorted(sequences)
    assert [("late" in s.get_attribute("class")) for s in steps] == [False, False, False, True]
    assert steps[2].find_elements(By.CSS_SELECTOR, 'tr[data-path="/status"]')
    # the current state: approved (the late change did not change it), password masked
    state = driver.find_element(By.ID, "subject-json").text
    assert '"approved"' in state and '"rejected"' not in state
    assert driver.find_elements(By.CSS_SELECTOR, "#subject-json .badge-masked")
    save_screenshot(driver, tmp_path, "subject-1280")
    save_screenshot(driver, tmp_path, "subject-phone", PHONE)


def test_live_tail_shows_a_new_action_within_two_seconds(
    page: WebDriver, world: World, tmp_path: Path
) -> None:
    driver = page
    sign_in(driver, world.keys["admin"])
    toggle = driver.find_element(By.ID, "live-toggle")
    toggle.send_keys(Keys.SPACE)  # the switch works from the keyboard
    wait_for(
        driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "on"
    )
    subject_id = f"live-{uuid.uuid4().hex[:6]}"
    publish(
        world.settings,
        [action(f"live-{subject_id}", ("expense", subject_id), "create", 1, {"amount_cents": 1})],
    )
    published = time.monotonic()
    selector = "#feed-table tbody tr:first-child .subject-id"
    WebDriverWait(
        driver, 2.0, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: any(e.text == subject_id for e in d.find_elements(By.CSS_SELECTOR, selector)))
    seen_after = time.monotonic() - published
    assert seen_after <= 2.0
    assert "fresh" in rows(driver)[0].get_attribute("class")
    assert "1 new" in driver.find_element(By.ID, "live-state").text
    save_screenshot(driver, tmp_path, "live-1280")
    toggle.send_keys(Keys.SPACE)
    wait_for(
        driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "off"
    )


def test_a_user_key_sees_only_its_users_events(
    page: WebDriver, world: World, tmp_path: Path
) -> None:
    driver = page
    sign_in(driver, world.keys["u1"])
    assert driver.find_element(By.ID, "who-role").text == "user"
    assert driver.find_element(By.ID, "who-user").text == "u-1"
    user_field = driver.find_element(By.ID, "f-user")
    assert user_field.get_attribute("value") == "u-1" and user_field.get_attribute("readonly")
    driver.find_element(By.CSS_SELECTOR, '#f-limit option[value="500"]').click()
    driver.find_element(By.ID, "apply-filters").click()
    wait_for(driver, lambda d: "limit=500" in d.current_url)
    wait_feed(driver)
    users = {r.find_element(By.CSS_SELECTOR, ".user").text for r in rows(driver)}
    assert users == {"u-1"}
    mine = world.listed("admin", user="u-1")
    assert row_ids(driver) == [e["change_id"] for e in world.listed("u1", order="desc")]
    assert len(rows(driver)) == len(mine) < len(world.listed("admin"))
    save_screenshot(driver, tmp_path, "feed-user-1280")
    # another user's change is not found; a subject shows this user's changes only
    other = next(e for e in world.listed("admin") if e["actor"]["user_id"] == "u-2")
    driver.get(world.page_url + f"#/change/{other['change_id']}")
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "no change event" in driver.find_element(By.ID, "error").text
    driver.get(world.page_url + "#/subject/expense_report/42")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline li.step"))
    assert "admin keys" in driver.find_element(By.ID, "subject-state").text
    users = {u.text for u in driver.find_elements(By.CSS_SELECTOR, "#timeline .step .user")}
    assert users == {"by u-1"}


def test_a_payload_written_to_inject_script_stays_text(
    page: WebDriver, world: World, tmp_path: Path
) -> None:
    driver = page
    sign_in(driver, world.keys["admin"])

    def nothing_injected(view: str) -> None:
        no_alert(driver)
        assert driver.find_elements(By.TAG_NAME, "img") == [], view
        scripts = [s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")]
        assert len(scripts) == 1, view
        assert scripts[0].startswith(f"{world.worker.base_url}/explorer/app.js?v="), view
        injected = "[onerror], [onclick], [onload], a[href^='javascript'], iframe, object, embed"
        assert driver.find_elements(By.CSS_SELECTOR, injected) == [], view

    event = world.listed("admin", subject_id=XSS_ID)[0]
    driver.get(world.page_url + "#/events?subject_id=" + urllib.parse.quote(XSS_ID, safe=""))
    wait_for(driver, lambda d: len(rows(d)) == 1)
    assert rows(driver)[0].find_element(By.CSS_SELECTOR, ".subject-id").text == XSS_ID
    nothing_injected("feed")
    rows(driver)[0].find_element(By.CSS_SELECTOR, "a.event-link").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "change-title").text == event["event_type"])
    text = driver.find_element(By.ID, "change-current").text
    for payload in XSS_TEXTS:
        assert json.dumps(payload) in text
    nothing_injected("change")
    save_screenshot(driver, tmp_path, "xss-change-1280")
    driver.find_element(By.ID, "link-subject").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline li.step"))
    assert driver.find_element(By.ID, "subject-title").text == "expense_report " + XSS_ID
    assert XSS_TEXTS[1] in driver.find_element(By.ID, "subject-json").text
    nothing_injected("subject")
    assert driver.execute_script("return typeof window.alert") == "function"
    violations = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == [], violations
