"""The main job end to end: ``changefeed demo`` drives demo traffic through the demo API and
the worker, and shows change events on ``changes`` and through the events API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from log_check import unexpected_lines
from worker_process import free_port

from changefeed.config import Settings


def test_demo_shows_change_events_flowing(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
        "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
        "CHANGEFEED_APP_ID": settings.app_id,
        "CHANGEFEED_PARTITIONS": str(settings.partitions),
        "CHANGEFEED_DATA_DIR": str(tmp_path / "worker"),
        "CHANGEFEED_WORKER_PORT": str(free_port()),
        "CHANGEFEED_DEMO_API_PORT": str(free_port()),
        "CHANGEFEED_SECRET": settings.secret.decode(),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "changefeed.cli",
            "demo",
            "--duration",
            "4",
            "--rate",
            "20",
            "--webhook-port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "\n".join(p.read_text()[-3000:] for p in (tmp_path / "demo").glob("*.log"))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{logs}"

    sent = re.search(r"loadgen: (\d+) requests, (\d+) actions sent", run.stdout)
    readable = re.search(r"==> (\d+) change events are readable", run.stdout)
    assert sent and readable, run.stdout
    actions, changes = int(sent.group(2)), int(readable.group(1))
    # duplicates and no-ops yield nothing; everything else becomes a change
    assert 0.5 * actions <= changes <= actions, run.stdout
    assert '"change_id"' in run.stdout and '"payload_changes"' in run.stdout
    listed = re.search(r"==> events API: the (\d+) latest change events", run.stdout)
    assert listed and int(listed.group(1)) > 0, run.stdout
    # the key is shown once for the user, never stored in clear
    key = re.search(r"CHANGEFEED_KEY=(cf_\S+)", run.stdout)
    assert key is not None
    assert key.group(1) not in logs
    # a webhook subscription received the demo traffic, every signature verified
    hooks = re.search(r"==> webhooks: (\d+) deliveries received, signatures verified", run.stdout)
    assert hooks and int(hooks.group(1)) > 0, run.stdout
    listen_log = (tmp_path / "demo" / "webhooks-listen.log").read_text()
    assert '"verified": false' not in listen_log
    assert "whsec_" not in logs
    # a healthy run: no warning or error in the worker's or the demo API's log (the demo's
    # duplicates and late completions are normal input, not faults)
    noise = unexpected_lines(sorted((tmp_path / "demo").glob("*.log")))
    assert not noise, "\n".join(noise[:40])
