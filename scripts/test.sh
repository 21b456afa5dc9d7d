#!/usr/bin/env bash
# The test suite: unit tests (no broker), then integration tests against a real Kafka
# broker that the suite fetches (once, into ~/.cache/changefeed) and starts itself.
# Extra arguments go to pytest (e.g. -k spool, or -m "not slow").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
# Tests run in parallel processes (pytest-xdist); CHANGEFEED_TEST_PROCESSES=0 runs them in one.
exec python -m pytest -ra -n "${CHANGEFEED_TEST_PROCESSES:-3}" --dist loadgroup "$@"
