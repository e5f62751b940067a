"""Where the project's data lives, in a clone of the book's repository and in an installed package.

Two kinds of data:

* **shipped**, read-only: the tiny and student models, the held-out text and the recorded results. In a
  clone they are ``data/`` beside the package; in an installed wheel they travel inside it as the package
  data ``secbook/data/`` (pyproject maps ``data/`` there).
* **written**: results of benchmark runs, models made by the chapters, and the cache of fetched and converted
  files (the real model). In a clone that is ``data/`` too (the cache under ``data/cache/``, ignored by git);
  installed, it is ``$SECBOOK_DATA`` if set, else the platform's user cache directory
  (``~/.cache/secbook`` on Linux, ``~/Library/Caches/secbook`` on macOS, ``%LOCALAPPDATA%\\secbook`` on
  Windows) — never site-packages. ``$SECBOOK_DATA`` also overrides the clone's ``data/``.

Readers of shipped files look in the written folder first, then in the shipped one
(``find_model``, ``find_result``), so a model a chapter makes shadows nothing it should not.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CLONE_DATA = ROOT / "data"
_PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def in_clone() -> bool:
    """True when the package runs from a clone of the repository (``data/heldout.txt`` beside it)."""
    return (_CLONE_DATA / "heldout.txt").is_file()


def user_cache_dir() -> Path:
    """The platform's per-user cache folder for secbook (created on first write, not here)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "secbook"


SHIPPED_DIR = _CLONE_DATA if in_clone() else _PACKAGE_DATA
if os.environ.get("SECBOOK_DATA"):
    DATA_DIR = Path(os.environ["SECBOOK_DATA"]).expanduser()
else:
    DATA_DIR = _CLONE_DATA if in_clone() else user_cache_dir()
MODELS_DIR = DATA_DIR / "models"
RESULTS_DIR = DATA_DIR / "results"
CACHE_DIR = DATA_DIR / "cache"
SHIPPED_MODELS_DIR = SHIPPED_DIR / "models"
SHIPPED_RESULTS_DIR = SHIPPED_DIR / "results"
HELDOUT_PATH = DATA_DIR / "heldout.txt" if (DATA_DIR / "heldout.txt").is_file() else SHIPPED_DIR / "heldout.txt"


def find_model(name: str) -> Path | None:
    """The folder of a model by name: written models first, then shipped ones; None if neither has it."""
    for base in (MODELS_DIR, SHIPPED_MODELS_DIR):
        if (base / name / "config.json").is_file():
            return base / name
    return None


def model_names() -> list[str]:
    """Names of the models in the written and the shipped model folders."""
    names = set()
    for base in (MODELS_DIR, SHIPPED_MODELS_DIR):
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if (p / "config.json").is_file())
    return sorted(names)


def find_result(file_name: str) -> Path:
    """A results file: the written one if it exists, else the shipped one (which may not exist either)."""
    written = RESULTS_DIR / file_name
    return written if written.exists() or not (SHIPPED_RESULTS_DIR / file_name).exists() else SHIPPED_RESULTS_DIR / file_name


def result_files(pattern: str = "*.csv") -> list[Path]:
    """Results files matching ``pattern`` in both folders, a written file shadowing a shipped one of its name."""
    found: dict[str, Path] = {}
    for base in (SHIPPED_RESULTS_DIR, RESULTS_DIR):
        if base.is_dir():
            found.update({p.name: p for p in base.glob(pattern)})
    return [found[k] for k in sorted(found)]
