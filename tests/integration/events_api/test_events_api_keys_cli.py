"""``changefeed keys create | list | revoke`` against the real key topic and a running API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from events_api_harness import running_api

from changefeed.config import Settings


def cli(settings: Settings, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
        "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
        "CHANGEFEED_HOME": str(home),
    }
    return subprocess.run(
        [sys.executable, "-m", "changefeed.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_create_list_use_revoke(settings: Settings, tmp_path: Path) -> None:
    async with running_api(settings) as api:
        created = await asyncio.to_thread(
            cli,
            settings,
            tmp_path,
            "create",
            "--tenant",
            "initech",
            "--role",
            "user",
            "--user",
            "milton",
            "--name",
            "stapler",
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        key_id = key.split("_")[1]
        assert "only time the key is shown" in created.stderr and key not in created.stderr

        listed = await asyncio.to_thread(cli, settings, tmp_path, "list", "--tenant", "initech")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["key_id"] for r in rows] == [key_id]
        assert rows[0]["role"] == "user" and rows[0]["user_id"] == "milton"
        assert key.split("_", 2)[2] not in listed.stdout and "digest" not in listed.stdout
        others = await asyncio.to_thread(cli, settings, tmp_path, "list", "--tenant", "nobody")
        assert others.stdout == ""

        headers = {"Authorization": f"Bearer {key}"}
        async with api.session.get(f"{api.base_url}/v1/events", headers=headers) as response:
            assert response.status == 200  # usable at once: a miss catches up with the topic

        revoked = await asyncio.to_thread(cli, settings, tmp_path, "revoke", key_id)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout

        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with api.session.get(f"{api.base_url}/v1/events", headers=headers) as response:
                if response.status == 401:
                    assert "revoked" in (await response.json())["error"]["message"]
                    break
            assert asyncio.get_running_loop().time() < deadline, "revocation never applied"
            await asyncio.sleep(0.1)

        unknown = await asyncio.to_thread(cli, settings, tmp_path, "revoke", "0" * 16)
        assert unknown.returncode == 1 and "no API key" in unknown.stderr
