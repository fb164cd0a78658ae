"""Resume points of `retention import`: a small JSON file per shop and file, e.g.
var/imports/shop_1a2b-3f9c0d1e2a4b5c6d.json, written after each committed chunk."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Checkpoint:
    shop_id: str
    sha256: str  # of the whole file
    mapping: str  # ColumnMapping.fingerprint(): a changed mapping makes different events
    rows: int  # records of the file committed; the import resumes after them
    imported: int = 0
    duplicates: int = 0


class CheckpointStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, shop_id: str, sha256: str) -> Path:
        safe_shop = re.sub(r"[^A-Za-z0-9._-]", "_", shop_id)
        return self.directory / f"{safe_shop}-{sha256[:16]}.json"

    def load(self, shop_id: str, sha256: str, mapping: str) -> Checkpoint | None:
        """The checkpoint of this very import, or None (none yet, unreadable, or another mapping)."""
        path = self.path_for(shop_id, sha256)
        try:
            document = json.loads(path.read_text())
            checkpoint = Checkpoint(**document)
        except (OSError, ValueError, TypeError):
            return None
        if (checkpoint.shop_id, checkpoint.sha256, checkpoint.mapping) != (shop_id, sha256, mapping):
            return None
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Atomically: a crash while saving leaves the previous checkpoint."""
        path = self.path_for(checkpoint.shop_id, checkpoint.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(checkpoint), indent=2) + "\n")
        os.replace(partial, path)

    def clear(self, shop_id: str, sha256: str) -> None:
        self.path_for(shop_id, sha256).unlink(missing_ok=True)
