"""The image's Python, as recorded in the manifest: a venv built from another one is rebuilt.

Standard library only: the warm-start check reads it before the server's modules load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from jobs.manifest import VenvRecord


class Interpreter(NamedTuple):
    version: str
    base_executable: str

    @classmethod
    def current(cls) -> Interpreter:
        base = getattr(sys, "_base_executable", None) or sys.executable
        return cls(version=sys.version, base_executable=str(Path(base).resolve()))

    def matches(self, record: VenvRecord | None) -> bool:
        return (
            record is not None
            and record.python_version == self.version
            and record.base_executable == self.base_executable
        )
