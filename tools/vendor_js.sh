#!/usr/bin/env bash
# Fetch the JavaScript the rendered book needs — require.js and the ipywidgets HTML manager (widgets, with the
# icon fonts its styles ask for), mermaid (the pipeline diagram) and MathJax 3 (the formulas) — from the npm registry into book/_static/vendor/, so the book renders with
# no CDN (offline classrooms, and machines that reach only the package registries). Not committed: fetched
# at build time, other people's code stays theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/vendor
[ -f "$dest/html-manager/embed-amd.js" ] && [ -f "$dest/require.js" ] && [ -f "$dest/mermaid/mermaid.esm.min.mjs" ] \
  && [ -f "$dest/mathjax/tex-mml-chtml.js" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.6 mermaid@11.12.1 mathjax@3.2.2 >/dev/null)
mkdir -p "$tmp/r" "$tmp/h" "$tmp/m" "$tmp/x" "$dest.tmp/html-manager" "$dest.tmp/mermaid/chunks/mermaid.esm.min" \
  "$dest.tmp/mathjax/output/chtml/fonts" "$dest.tmp/mathjax/input/tex"
tar xzf "$tmp"/requirejs-2.3.7.tgz -C "$tmp/r"
tar xzf "$tmp"/jupyter-widgets-html-manager-1.0.6.tgz -C "$tmp/h"
tar xzf "$tmp"/mermaid-11.12.1.tgz -C "$tmp/m"
tar xzf "$tmp"/mathjax-3.2.2.tgz -C "$tmp/x"
cp "$tmp/r/package/require.js" "$dest.tmp/"
find "$tmp/h/package/dist" -maxdepth 1 -type f ! -name '*.map' -exec cp {} "$dest.tmp/html-manager/" \;
cp "$tmp/m/package/dist/mermaid.esm.min.mjs" "$dest.tmp/mermaid/"
find "$tmp/m/package/dist/chunks/mermaid.esm.min" -maxdepth 1 -name '*.mjs' -exec cp {} "$dest.tmp/mermaid/chunks/mermaid.esm.min/" \;
# MathJax: the TeX+MathML to HTML component, the fonts it loads beside itself, and the parts it may load on demand
# (TeX extensions, the context menu, assistive MathML); not the large speech-rule engine.
mj="$tmp/x/package/es5"
cp "$mj/tex-mml-chtml.js" "$dest.tmp/mathjax/"
cp -r "$mj/output/chtml/fonts/woff-v2" "$dest.tmp/mathjax/output/chtml/fonts/"
cp -r "$mj/input/tex/extensions" "$dest.tmp/mathjax/input/tex/"
cp -r "$mj/ui" "$mj/a11y" "$dest.tmp/mathjax/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "vendored require.js, @jupyter-widgets/html-manager, mermaid and MathJax into $dest"
