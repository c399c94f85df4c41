"""Real data the tests read, shipped under `tests/fixtures/` with its attribution."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENWIKI_FILMS = FIXTURES / "enwiki-films"
