#!/usr/bin/env bash
# Set up (idempotently) and run the crampwatch live demo. Arguments go to `crampwatch demo`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh runtime
exec .venv/bin/crampwatch demo "$@"
