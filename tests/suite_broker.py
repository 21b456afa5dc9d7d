"""The broker the test suite starts when ``CHANGEFEED_BOOTSTRAP`` names none."""

from __future__ import annotations

import os
from pathlib import Path

from changefeed.config import BrokerSettings


def suite_broker_settings() -> BrokerSettings:
    """The project broker on ``CHANGEFEED_TEST_BROKER_PORT`` (default 39092)."""
    port = int(os.environ.get("CHANGEFEED_TEST_BROKER_PORT", "39092"))
    home = os.environ.get("CHANGEFEED_HOME")
    base = BrokerSettings(port=port, controller_port=port + 1)
    return BrokerSettings(
        port=port, controller_port=port + 1, home=Path(home) if home else base.home
    )
