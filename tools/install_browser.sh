#!/usr/bin/env bash
# Headless Chromium and its driver for the browser test (Debian packages), plus a font with CJK glyphs
# so screenshots show the book's Chinese terms. A no-op when they are already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh 2>/dev/null | grep -q .; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null
else
  echo "note: chromium/chromedriver missing and cannot be installed here (needs root + apt-get);" \
       "the browser test will be skipped. Install chromium and chromium-driver to run it." >&2
fi
