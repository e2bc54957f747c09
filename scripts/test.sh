#!/usr/bin/env bash
# Set up .venv (see setup.sh) and run the test suite (slow checks excluded; add `-m slow` for them).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
