"""The feed index writer process never outlives the worker that started it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys, time
from events_api.indexer import _ChildIndex
_ChildIndex.setup(int(sys.argv[1]), sys.argv[2], "changes")
time.sleep(120)
"""


def test_a_writer_whose_parent_is_already_gone_leaves(tmp_path: Path) -> None:
    # The worker was killed while the writer was starting: by the time the writer sets up,
    # its parent is no longer the worker (whose pid the worker passed it).
    gone_parent = os.getppid()  # alive, but not the parent of the process started below
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(gone_parent), str(tmp_path / "feed.sqlite")],
        timeout=60,
        capture_output=True,
    )
    assert child.returncode == 0, child.stderr.decode()
