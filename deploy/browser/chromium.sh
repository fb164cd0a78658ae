#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed: the browser tests (survey page, console) drive it
# headless through Playwright. Browser builds are never downloaded; Playwright is pointed at
# /usr/bin/chromium (or $RETENTION_TEST_CHROMIUM).
set -euo pipefail

CHROMIUM=${RETENTION_TEST_CHROMIUM:-/usr/bin/chromium}

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "chromium: $CHROMIUM is missing; install Debian's 'chromium' package (sudo apt-get install chromium)" >&2
    echo "chromium: or set RETENTION_TEST_CHROMIUM to a Chromium binary. The browser tests need it." >&2
    exit 1
fi
echo "chromium: installing Debian's chromium package"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
