"""The broker the test suite starts when ``CHANGEFEED_BOOTSTRAP`` names none.

Its state (data, logs, pid file) lives in a folder of this run's own, named by
``CHANGEFEED_TEST_BROKER_STATE``, which the controlling process creates and removes: a run
never inherits the topics, or a half-written log, of an earlier one. The jar cache is the
shared one of ``CHANGEFEED_HOME`` (or the default home).
"""

from __future__ import annotations

import os
from pathlib import Path

from changefeed.config import BrokerSettings

STATE_ENV = "CHANGEFEED_TEST_BROKER_STATE"


def suite_broker_settings() -> BrokerSettings:
    """The project broker on ``CHANGEFEED_TEST_BROKER_PORT`` (default 29092)."""
    port = int(os.environ.get("CHANGEFEED_TEST_BROKER_PORT", "29092"))
    home = os.environ.get("CHANGEFEED_HOME")
    state = os.environ.get(STATE_ENV)
    base = BrokerSettings(port=port, controller_port=port + 1)
    return BrokerSettings(
        port=port,
        controller_port=port + 1,
        home=Path(home) if home else base.home,
        state_root=Path(state) if state else None,
    )
