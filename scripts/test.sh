#!/usr/bin/env bash
# Set up (idempotently) and run the whole crampwatch test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k protocol
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh test
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests — treating that as a failure" >&2
    exit 1
fi
exit "$rc"
