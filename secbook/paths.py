"""Where the project's data lives: ``data/`` beside the package, or ``$SECBOOK_DATA``."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SECBOOK_DATA", ROOT / "data"))
MODELS_DIR = DATA_DIR / "models"
RESULTS_DIR = DATA_DIR / "results"
