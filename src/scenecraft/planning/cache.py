"""The on-disk plan cache: one JSON file per (prompt, backend, model, template version, layout, size).

Location: ``cache_dir`` if given, else ``$SCENECRAFT_CACHE/plans``, else
``$XDG_CACHE_HOME/scenecraft/plans`` (default ``~/.cache/scenecraft/plans``). Writes are atomic
(a temporary file in the same folder, then ``os.replace``); unreadable entries count as misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..scene import Scene, SceneError, load_json

__all__ = ["PlanCache", "default_cache_dir", "plan_key"]


def default_cache_dir() -> Path:
    """Where plans are cached when no ``cache_dir`` is given (see the module docstring)."""
    root = os.environ.get("SCENECRAFT_CACHE")
    if root:
        return Path(root).expanduser() / "plans"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "scenecraft" / "plans"


def plan_key(*, prompt: str, backend: str, model: str, base_url: str | None, template: str, layout: str,
             width: int, height: int) -> dict[str, Any]:
    """The fields that identify a plan (everything that changes the LLM's answer)."""
    return {"prompt": prompt, "backend": backend, "model": model, "base_url": base_url, "template": template,
            "layout": layout, "width": width, "height": height}


@dataclass(frozen=True)
class PlanCache:
    """A folder of cached plans."""

    folder: Path

    @classmethod
    def at(cls, cache_dir: str | Path | None) -> PlanCache:
        return cls(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.json"

    def get(self, key: dict[str, Any]) -> Scene | None:
        path = self.path(key)
        try:
            entry = load_json(path.read_bytes(), what="plan cache entry")
            if not isinstance(entry, dict) or entry.get("key") != key:
                return None
            return Scene.from_dict(entry["scene"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SceneError):
            return None

    def put(self, key: dict[str, Any], scene: Scene) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        text = json.dumps({"key": key, "scene": scene.to_dict()}, ensure_ascii=False, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
