#!/usr/bin/env bash
# Fetch the two JavaScript files the rendered widgets need (require.js and the ipywidgets HTML manager)
# from the npm registry into book/_static/vendor/, so the book renders widgets with no CDN (offline
# classrooms, and machines that reach only the package registries). Not committed: fetched at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/vendor
[ -f "$dest/html-manager/embed-amd.js" ] && [ -f "$dest/require.js" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.6 >/dev/null)
mkdir -p "$tmp/r" "$tmp/h" "$dest.tmp/html-manager"
tar xzf "$tmp"/requirejs-2.3.7.tgz -C "$tmp/r"
tar xzf "$tmp"/jupyter-widgets-html-manager-1.0.6.tgz -C "$tmp/h"
cp "$tmp/r/package/require.js" "$tmp/r/package/LICENSE" "$dest.tmp/" 2>/dev/null || cp "$tmp/r/package/require.js" "$dest.tmp/"
find "$tmp/h/package/dist" -maxdepth 1 -type f ! -name '*.map' -exec cp {} "$dest.tmp/html-manager/" \;
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "vendored require.js and @jupyter-widgets/html-manager into $dest"
