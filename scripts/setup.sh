#!/usr/bin/env bash
# Create .venv and install synth2 with its test extra.
# torch is installed first, pinned to the CPU wheel these machines carry, so that
# nothing that depends on torch pulls a multi-GB CUDA build. GPU users: install
# the torch build you want into .venv first and set SYNTH2_TORCH="" to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SYNTH2_TORCH-torch==2.13.0}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [[ -n "$TORCH_SPEC" ]]; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
.venv/bin/python -m pip install -q -e ".[test]"
