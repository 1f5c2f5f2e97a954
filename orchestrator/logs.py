"""Log lines tagged with the step they belong to: ``time level [step] message``."""

from __future__ import annotations

import logging
import sys


class _StepFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        step = getattr(record, "step", None) or "-"
        source = getattr(record, "source", None)
        record.tag = f"{step}:{source}" if source else step
        return super().format(record)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StepFormatter("%(asctime)s %(levelname)-7s [%(tag)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
