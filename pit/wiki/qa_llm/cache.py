"""Raw LLM replies cached on disk, so a rerun sends no request twice."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ReplyCache:
    """Raw replies on disk, one JSON file per (document, model, prompt) key.

    Raw replies rather than filtered pairs are kept so parsing and filters can
    change without paying for the requests again. Files are written under a
    temporary name and renamed, so a crash never leaves a half-written entry.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["reply"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, OSError):
            logger.warning("ignoring unreadable QA cache entry %s", path)
            return None

    def put(self, key: str, reply: str, meta: dict[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({**meta, "reply": reply}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
