"""Stage outputs cached by a hash of their inputs.

Every stage of a run writes its output atomically (a file renamed into place), so an entry that
exists is complete: a rerun skips it, and a run killed mid-way resumes from the finished entries.
An entry is reused only if its bytes are those recorded when it was written (a SHA-256 beside
it): a damaged or edited entry is computed again, with a warning. Keys hash the stage's inputs
(spec values and upstream keys, not file bytes) together with the densevis version, so a new
release never reuses old outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from densevis import __version__
from probes.atomic import atomic_output, remove_stale_temps
from probes.reader import file_sha256


def stage_key(stage: str, **inputs) -> str:
    """A short hex key of ``stage`` and its JSON-able ``inputs``.

    >>> stage_key("data", set="base", n=10) == stage_key("data", n=10, set="base")
    True
    """
    text = json.dumps({"stage": stage, "inputs": inputs, "densevis": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Cache entries under ``root/<stage>/<name>-<key><suffix>``, each with the SHA-256 of its
    bytes beside it (``<entry>.sha256``), recorded when it was written and checked before it
    is reused: a truncated or edited entry is computed again, never used."""

    def __init__(self, root: str | os.PathLike, warn=None):
        self.root = Path(root)
        self.warn = warn or (lambda line: print(line, file=sys.stderr))
        self._swept: set[Path] = set()

    def path(self, stage: str, name: str, key: str, suffix: str = "") -> Path:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        if folder not in self._swept:  # what killed runs left there
            remove_stale_temps(folder)
            self._swept.add(folder)
        safe = re.sub(r"[^\w.-]", "-", name)  # a factory's name, "module:callable", has a ":"
        return folder / f"{safe}-{key}{suffix}"

    @staticmethod
    def record(path: Path) -> None:
        """Record the SHA-256 of the finished entry ``path`` (after it was written)."""
        with atomic_output(_hash_path(path), force=True) as tmp:
            tmp.write_text(file_sha256(path) + "\n")

    def reusable(self, path: Path) -> bool:
        """Whether entry ``path`` exists with the bytes recorded when it was written. A damaged
        one is removed, with a warning, so that the stage computes it again."""
        if not path.exists():
            return False
        recorded = _hash_path(path)
        try:
            expected = recorded.read_text().strip()
        except OSError:
            expected = None
        if expected is not None and expected == file_sha256(path):
            return True
        why = ("its bytes differ from those recorded when it was written" if expected else
               "no hash was recorded with it (its run was killed, or an older densevis wrote it)")
        self.warn(f"densevis: warning: cache entry {path} is not used: {why}; computing it again")
        for stale in (path, recorded):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return False


def _hash_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256")
