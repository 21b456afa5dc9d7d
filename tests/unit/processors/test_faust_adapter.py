"""The processors reach into faust-streaming and aiokafka in one module, for tested versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from processors import faust_adapter
from processors.faust_adapter import (
    TESTED_VERSIONS,
    UnsupportedLibraryVersion,
    check_versions,
    installed_versions,
)

PROCESSORS = Path(faust_adapter.__file__).parent
# x._name where x (the name right before the dot) is not self, cls or super(): reaching
# into another object's private parts, e.g. ``app.producer._transaction_producers``.
PRIVATE_ACCESS = re.compile(r"(?<!\w)(?!self\.|cls\.|super\(\)\.)(\w+(?:\(\))?|\])\._[a-z]\w*")
ALLOWED = {"os._exit"}


def test_installed_libraries_are_the_versions_the_adapter_was_written_for() -> None:
    installed = installed_versions()
    assert installed == dict(TESTED_VERSIONS), (
        f"faust-streaming/aiokafka changed: installed {installed}, processors/faust_adapter.py "
        f"was written for {dict(TESTED_VERSIONS)}; re-check every private attribute it uses"
    )
    check_versions()


def test_another_version_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        faust_adapter.metadata,
        "version",
        lambda name: "9.9.9" if name == "aiokafka" else TESTED_VERSIONS[name],
    )
    with pytest.raises(UnsupportedLibraryVersion, match=r"aiokafka 9\.9\.9 is installed.*re-check"):
        check_versions()


def test_no_other_processors_module_touches_private_attributes() -> None:
    offenders = []
    for path in sorted(PROCESSORS.rglob("*.py")):
        if path.name == "faust_adapter.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            for match in PRIVATE_ACCESS.finditer(code):
                if match.group(0) not in ALLOWED:
                    offenders.append(f"{path.relative_to(PROCESSORS)}:{number}: {match.group(0)}")
    assert offenders == [], "private attributes outside processors/faust_adapter.py:\n" + "\n".join(
        offenders
    )


async def test_the_worker_consumer_fetches_with_the_short_wait(tmp_path: Path) -> None:
    """Faust builds its consumer with a 1.5 s fetch wait, which holds ``actions`` back behind
    a fetch of quiet partitions; the worker's consumer is built with FETCH_MAX_WAIT_MS."""
    from changefeed.config import Settings
    from processors.app import new_app

    app = new_app(Settings(bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=2))
    consumer = app.consumer
    assert isinstance(consumer, faust_adapter.BatchingConsumer)
    thread = consumer._new_consumer_thread()
    assert isinstance(thread, faust_adapter._ConsumerThread)
    built = thread._create_worker_consumer(app.transport)
    try:
        assert built._fetch_max_wait_ms == faust_adapter.FETCH_MAX_WAIT_MS < 1500
    finally:
        await built.stop()  # never started; stop() closes its client
