#!/usr/bin/env bash
# The test suite: unit tests (no broker), then integration tests against a real Kafka
# broker that the suite fetches (once, into ~/.cache/changefeed) and starts itself.
# Extra arguments go to pytest (e.g. -k spool, or -m "not slow").
#
# The explorer's browser tests need Debian's chromium and chromium-driver: installed here
# when missing, if this runs as root where apt-get exists; otherwise those tests skip and
# say why.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing chromium and chromium-driver (Debian packages) for the browser tests"
        if ! { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
            echo "==> could not install chromium; the browser tests will skip" >&2
        fi
    else
        echo "==> no /usr/bin/chromium or /usr/bin/chromedriver, and no root apt-get to install" \
            "them: the browser tests will skip" >&2
    fi
fi
# Tests run in parallel processes (pytest-xdist); CHANGEFEED_TEST_PROCESSES=0 runs them in one.
exec python -m pytest -ra -n "${CHANGEFEED_TEST_PROCESSES:-3}" --dist loadgroup "$@"
