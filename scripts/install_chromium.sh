#!/usr/bin/env bash
# Install headless Chromium and chromedriver (Debian packages `chromium` and
# `chromium-driver`, plus fonts) for tests/test_status_page_browser.py.
# Idempotent: does nothing when both are present. CI runs it before the
# tests; as root it installs with apt-get, otherwise it says what to run and
# exits 1.
set -euo pipefail

say() { printf 'install_chromium: %s\n' "$*"; }

find_browser() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if browser=$(find_browser) && command -v chromedriver >/dev/null 2>&1; then
    say "already installed: $browser, $(command -v chromedriver)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    say "Chromium is missing and this is not root; install it with:" >&2
    say "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "Chromium is missing and apt-get is not available; install Chromium" \
        "and chromedriver with this system's package manager." >&2
    exit 1
fi

say "installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Fonts are only recommended by chromium; without them screenshots show boxes.
apt-get install -y -q --no-install-recommends chromium chromium-driver \
    fonts-liberation fonts-dejavu-core
browser=$(find_browser)
say "installed: $browser ($("$browser" --version 2>/dev/null || echo 'version unknown'))"
