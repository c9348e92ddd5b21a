#!/usr/bin/env bash
# Installs everything the test suite needs, then runs it. pytest's exit code is this
# script's exit code: 5 (no tests collected) fails like any other error.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
