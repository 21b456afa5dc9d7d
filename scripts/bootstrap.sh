#!/usr/bin/env bash
# Sourced by the other scripts: make sure .venv exists and holds this checkout's
# dependencies. Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "changefeed needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi
# The native Avro codec (native/, Rust) is built too when cargo is there; without it fastavro
# serves, slower (schemas/native.py).
sources=$(cat "$ROOT/pyproject.toml" "$ROOT/native/pyproject.toml" "$ROOT/native/Cargo.toml" \
    "$ROOT/native/Cargo.lock" "$ROOT"/native/src/*.rs | sha1sum | cut -c1-12)
stamp="$VENV/.installed-$sources"
if [ ! -f "$stamp" ]; then
    echo "==> installing changefeed and its dependencies into $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -e "$ROOT[test]"
    if command -v cargo > /dev/null; then
        echo "==> building the native Avro codec (native/)"
        "$VENV/bin/pip" install --quiet "$ROOT/native"
    else
        echo "==> no cargo (Rust): the native Avro codec is not built, fastavro serves;" \
            "install Rust (https://rustup.rs) and run this again, or set CHANGEFEED_NATIVE=0" >&2
    fi
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
