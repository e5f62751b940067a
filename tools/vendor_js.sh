#!/usr/bin/env bash
# Fetch the JavaScript the rendered book needs — require.js and the ipywidgets HTML manager (widgets), and
# mermaid (the pipeline diagram) — from the npm registry into book/_static/vendor/, so the book renders with
# no CDN (offline classrooms, and machines that reach only the package registries). Not committed: fetched
# at build time, other people's code stays theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/vendor
[ -f "$dest/html-manager/embed-amd.js" ] && [ -f "$dest/require.js" ] && [ -f "$dest/mermaid/mermaid.esm.min.mjs" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.6 mermaid@11.12.1 >/dev/null)
mkdir -p "$tmp/r" "$tmp/h" "$tmp/m" "$dest.tmp/html-manager" "$dest.tmp/mermaid/chunks/mermaid.esm.min"
tar xzf "$tmp"/requirejs-2.3.7.tgz -C "$tmp/r"
tar xzf "$tmp"/jupyter-widgets-html-manager-1.0.6.tgz -C "$tmp/h"
tar xzf "$tmp"/mermaid-11.12.1.tgz -C "$tmp/m"
cp "$tmp/r/package/require.js" "$dest.tmp/"
find "$tmp/h/package/dist" -maxdepth 1 -type f ! -name '*.map' -exec cp {} "$dest.tmp/html-manager/" \;
cp "$tmp/m/package/dist/mermaid.esm.min.mjs" "$dest.tmp/mermaid/"
find "$tmp/m/package/dist/chunks/mermaid.esm.min" -maxdepth 1 -name '*.mjs' -exec cp {} "$dest.tmp/mermaid/chunks/mermaid.esm.min/" \;
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "vendored require.js, @jupyter-widgets/html-manager and mermaid into $dest"
