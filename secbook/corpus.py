"""The training text of the tiny model: the Python standard library's own source.

CPython's standard library is distributed under the PSF licence, which allows redistribution, so the
held-out part can be committed and every reader measures perplexity on exactly the same text. The
file list is deterministic (sorted paths) and the train/held-out split is by file, fixed by a hash of
the file's relative path, so no held-out line is ever seen in training.
"""
from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from .paths import HELDOUT_PATH

# Folders that are tests, generated tables or bundled binaries rather than ordinary code.
EXCLUDED_PARTS = {
    "test", "tests", "idle_test", "encodings", "pydoc_data", "__pycache__", "_bundled",
    "site-packages", "dist-packages", "lib2to3",
}
EXCLUDED_PREFIXES = ("_sysconfigdata", "config-")
FILE_SEPARATOR = "\n\n"


def stdlib_dir() -> Path:
    """The directory of this interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Sorted relative paths of the standard-library ``.py`` files used as corpus."""
    root = Path(root) if root is not None else stdlib_dir()
    out = []
    for f in root.rglob("*.py"):
        rel = f.relative_to(root)
        if any(p in EXCLUDED_PARTS or p.startswith(EXCLUDED_PREFIXES) for p in rel.parts):
            continue
        if f.name.startswith("test_"):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def is_heldout(rel_path: str, every: int = 20) -> bool:
    """A file is held out when the first byte of the SHA-256 of its path is ≡ 0 (mod ``every``)."""
    return hashlib.sha256(rel_path.encode()).digest()[0] % every == 0


def read_split(root: Path | None = None) -> tuple[list[str], list[str]]:
    """Return (train_texts, heldout_texts): one string per source file."""
    root = Path(root) if root is not None else stdlib_dir()
    train, heldout = [], []
    for rel in stdlib_files(root):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        (heldout if is_heldout(rel) else train).append(text)
    return train, heldout


def heldout_text(max_chars: int | None = None) -> str:
    """The committed held-out text (standard-library files the tiny model never saw)."""
    if not HELDOUT_PATH.exists():
        raise FileNotFoundError(f"{HELDOUT_PATH} is missing: run `python -m secbook train` (or `make model`).")
    text = HELDOUT_PATH.read_text(encoding="utf-8")
    return text if max_chars is None else text[:max_chars]
