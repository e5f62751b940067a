#!/usr/bin/env bash
# The package outside the repository, as a reader installs it: build the wheel, install it into a fresh virtual
# environment outside the clone, and load every built-in name there (the tiny model and its tokenizer come from
# the wheel; the real model is fetched into a fresh user cache; results are written there, not into the wheel).
# The new environment borrows .venv's third-party packages through a .pth line (saves a 1.8 GB install); secbook
# itself comes only from the wheel, and the clone is not on its path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation . -w "$tmp/dist" 2>&1 | grep -v "^WARNING: Location" || true
base=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')/bin/python3
"$base" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --no-deps "$tmp"/dist/secbook-*.whl 2>&1 | grep -v "^WARNING: Location" || true
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/secbook-deps.pth"
cd "$tmp"
env -u SECBOOK_DATA HF_HUB_OFFLINE=1 XDG_CACHE_HOME="$tmp/cache" SECBOOK_CLONE="$root" \
  "$tmp/venv/bin/python" - <<'PY'
import os, sys
from pathlib import Path
import pandas as pd
import secbook
from secbook import paths, pretrained

clone = Path(os.environ["SECBOOK_CLONE"])
assert clone not in Path(secbook.__file__).parents, f"secbook imported from the clone: {secbook.__file__}"
assert not paths.in_clone() and Path(os.environ["XDG_CACHE_HOME"]) in paths.DATA_DIR.parents, paths.DATA_DIR
names = secbook.available()
assert {"tiny", "student", pretrained.NAME}.issubset(names), names
for name in names:
    kw = {"num_hidden_layers": 1} if name.startswith("replica:") else {}  # one layer: the loading path, quickly
    model, tok = secbook.load(name, **kw)
    ids = tok("def add(a, b):", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    print(f"loaded {name}: {sum(p.numel() for p in model.parameters()):,} parameters, generated {out.shape[1] - ids.shape[1]} tokens")
assert pretrained.cache_root().is_relative_to(paths.DATA_DIR)
saved = secbook.save_results(pd.DataFrame({"x": [1]}), "wheel_check")
assert saved.is_relative_to(paths.DATA_DIR), saved
assert len(secbook.load_results("generate_ladder")) > 0  # a recorded result shipped in the wheel
print("wheel check passed: secbook", secbook.__version__, "from", Path(secbook.__file__).parent)
PY
