#!/usr/bin/env bash
# Idempotent set-up for crampwatch on Debian 12 (run as root or with sudo available).
# Installs the Debian packages crampwatch runs against, creates .venv and installs
# crampwatch into it.  A second run with nothing changed takes about a second.
#
# Usage: scripts/setup.sh [runtime|test]   (test adds the browser for UI tests)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
profile="${1:-runtime}"

runtime_pkgs=(python3-venv mosquitto mosquitto-clients influxdb dbus fonts-dejavu-core)
test_pkgs=(chromium chromium-driver)
pkgs=("${runtime_pkgs[@]}")
[ "$profile" = test ] && pkgs+=("${test_pkgs[@]}")

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian packages enable system-wide services; crampwatch starts its own
    # instances on loopback, so keep the system ones from holding the default ports.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now mosquitto influxdb >/dev/null 2>&1 || true
    fi
fi

extras="dev"
stamp=".venv/.crampwatch-setup"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $extras $(python3 --version 2>&1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv and installing crampwatch[$extras]" >&2
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
    echo "$want" > "$stamp"
fi
