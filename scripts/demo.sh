#!/usr/bin/env bash
# The main job: install, start the Kafka broker, create the topics, start the processors
# worker (with the events API) and the demo API, send demo traffic, print where to look.
# Extra arguments go to `changefeed demo` (e.g. --duration 60 --keep-running).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec changefeed demo "$@"
