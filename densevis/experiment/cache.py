"""Stage outputs cached by a hash of their inputs.

Every stage of a run writes its output atomically (a file renamed into place, or a folder renamed
into place), so an entry that exists is complete: a rerun skips it, and a run killed mid-way
resumes from the finished entries. Keys hash the stage's inputs (spec values and upstream keys,
not file bytes) together with the densevis version, so a new release never reuses old outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from densevis import __version__


def stage_key(stage: str, **inputs) -> str:
    """A short hex key of ``stage`` and its JSON-able ``inputs``.

    >>> stage_key("data", set="base", n=10) == stage_key("data", n=10, set="base")
    True
    """
    text = json.dumps({"stage": stage, "inputs": inputs, "densevis": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Cache entries under ``root/<stage>/<name>-<key><suffix>``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, stage: str, name: str, key: str, suffix: str = "") -> Path:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}-{key}{suffix}"

    @contextlib.contextmanager
    def folder(self, target: Path) -> Iterator[Path]:
        """A temporary folder that becomes ``target`` when the block succeeds."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
