"""Where the shared real data lies: `shared/` beside the checkout (PIT_SHARED overrides)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("PIT_SHARED") or Path(__file__).resolve().parents[2] / "shared")
ENWIKI_FILMS = SHARED / "fixtures" / "enwiki-films"
