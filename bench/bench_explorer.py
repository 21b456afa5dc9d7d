"""Time from opening the explorer page (key already given) to its first 100 events drawn.

Run ``python bench/bench_explorer.py`` (a broker on ``--bootstrap``, default the test broker
127.0.0.1:29092; Debian's ``chromium`` and ``chromium-driver``). Like
``bench_events_api.py`` it creates fresh topics, publishes ``--events`` ChangeEvents (1M by
default) for ``--tenants`` tenants (100) straight to ``changes`` (created_at spread over the
last six days), creates an admin key per tenant and a user key, starts one real
``changefeed worker`` and waits until its feed index holds everything. Then headless Chromium
(driven by Selenium through ``/usr/bin/chromedriver``, nothing downloaded) loads the page
``--samples`` times per scenario, each time with the key of another tenant already in
``sessionStorage``, and reads the page's ``explorer:first-page`` performance mark: set once
the first page's rows are in the document and the frame after has been painted. Its
``startTime`` counts from the navigation's start, so it includes fetching the page, its
script and style, ``/v1/me`` and ``/v1/events``.

Scenarios: an admin key with no filter, an admin key with filters (event type pattern and
criticalities), a user key (the user's own events). Printed per scenario: the mark's
p50/p95/max, the ``/v1/events`` request's own p50/p95 (resource timing) and the p95 as a
fraction of the 500 ms target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_events_api import (
    Bench,
    WorkerProcess,
    corpus_arguments,
    delete_own_topics,
    prepare,
    start_worker,
)

from changefeed.config import Settings
from events_api.access.keys import Role, new_key

TARGET_MS = 500.0
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FIRST_PAGE = """
const mark = performance.getEntriesByName('explorer:first-page')[0];
if (!mark) return null;
const api = performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/v1/events?'))[0];
const nav = performance.getEntriesByType('navigation')[0];
return {
  mark: mark.startTime,
  rows: document.querySelectorAll('#feed-table tbody tr').length,
  api: api ? api.duration : null,
  html: nav ? nav.responseEnd : null,
  dom: nav ? nav.domContentLoadedEventStart : null,
  asked: api ? api.startTime : null,
  answered: api ? api.responseEnd : null,
  rows_in: (performance.getEntriesByName('explorer:first-rows')[0] || {}).startTime,
};
"""


def start_chromium(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def first_page(driver: Any, page_url: str, key: str, fragment: str) -> dict[str, float]:
    """Open the page with ``key`` in sessionStorage; the first page's mark and API time."""
    driver.execute_script("sessionStorage.setItem('changefeed.explorer.apiKey', arguments[0])", key)
    driver.get(page_url + fragment)
    if fragment:  # a fragment alone is a same-document navigation: load the page again
        driver.refresh()
    deadline = time.monotonic() + 30
    while True:
        found = driver.execute_script(FIRST_PAGE)
        if found is not None:
            return dict(found)
        if time.monotonic() > deadline:
            raise SystemExit(f"the first page was not drawn within 30 s at {driver.current_url}")
        time.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(args: argparse.Namespace, base_url: str, keys: dict[str, str], user_key: str) -> None:
    profile = Path(tempfile.mkdtemp(prefix="bench-explorer-chromium-"))
    driver = start_chromium(profile)
    page_url = f"{base_url}/explorer"
    tenants = sorted(keys)
    scenarios = [
        ("admin key, no filter", [keys[t] for t in tenants], ""),
        (
            "admin key, event_type=invoice:* criticality=1,2",
            [keys[t] for t in tenants],
            "#/events?event_type=invoice%3A*&criticality=1%2C2",
        ),
        ("user key (its user's events)", [user_key], ""),
    ]
    try:
        driver.get(page_url)
        for _ in range(3):  # warm the browser's caches of the page's files
            first_page(driver, page_url, keys[tenants[0]], "")
        print(
            f"{'scenario':<50} {'first 100 drawn (ms)':>30} {'/v1/events (ms)':>18}"
            f" {'p95 / target':>13}"
        )
        for name, scenario_keys, fragment in scenarios:
            marks, apis, rows, samples = [], [], [], []
            for i in range(args.samples):
                found = first_page(
                    driver, page_url, scenario_keys[i % len(scenario_keys)], fragment
                )
                samples.append(found)
                marks.append(found["mark"])
                rows.append(int(found["rows"]))
                if found["api"] is not None:
                    apis.append(found["api"])
            p95 = percentile(marks, 0.95)
            api_text = (
                f"p50 {percentile(apis, 0.5):5.1f} p95 {percentile(apis, 0.95):5.1f}"
                if apis
                else "n/a"
            )
            print(
                f"{name:<50} p50 {percentile(marks, 0.5):6.1f} p95 {p95:6.1f} max {max(marks):6.1f}"
                f" {api_text:>18} {p95 / TARGET_MS:12.2f}x"
            )
            phases = []
            for label, name_in in (
                ("page received", "html"),
                ("DOM ready", "dom"),
                ("/v1/events asked", "asked"),
                ("answered", "answered"),
                ("rows in the document", "rows_in"),
            ):
                values = [f[name_in] for f in samples if f.get(name_in) is not None]
                if values:
                    phases.append(f"{label} {percentile(values, 0.5):.0f}")
            print(f"{'':<50} p50 phases (ms from opening): {', '.join(phases)}")
            if min(rows) < 100:
                print(f"{'':<50} (pages drew {min(rows)}..{max(rows)} rows: fewer matched)")
        print(f"target: p95 <= {TARGET_MS:.0f} ms from opening the page to the first 100 drawn")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def wait_indexed(
    args: argparse.Namespace, settings: Settings, worker: WorkerProcess
) -> float:
    bench = Bench(args, settings, worker)
    async with aiohttp.ClientSession() as session:
        bench.session = session
        bench.keys = dict(args.keys)
        began = time.monotonic()
        while True:
            try:
                async with session.get(f"{worker.base_url}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if worker.process.poll() is not None or time.monotonic() - began > 180:
                raise SystemExit(f"the worker did not start; see {worker.log}")
            await asyncio.sleep(0.5)
        await bench.wait_indexed(args.events, args.index_timeout)
        return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus_arguments(parser)
    parser.add_argument("--samples", type=int, default=60, help="page loads per scenario")
    parser.add_argument("--port", type=int, default=16098, help="the worker's web port")
    args = parser.parse_args()
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is missing: apt-get install -y chromium chromium-driver")

    settings, data_dir, store = prepare(args, "benchx")
    user_key, record = new_key("tenant-000", Role.USER, user_id="u-3", name="bench")
    store.put(record)
    worker = start_worker(settings, args.port, data_dir / "worker.log")
    try:
        indexed_s = asyncio.run(wait_indexed(args, settings, worker))
        print(
            f"index      {args.events:,} events indexed {indexed_s:.0f}s after the worker started"
        )
        measure(args, worker.base_url, args.keys, user_key)
    finally:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
        delete_own_topics(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
