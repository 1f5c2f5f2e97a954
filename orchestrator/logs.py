"""Log lines tagged with the step they belong to: ``time level [step:source] message``, or one
JSON object per line with ``--log-format json``. Every line is redacted on the way out."""

from __future__ import annotations

import json
import logging
import sys
import time

from jobs.redact import redact


class _StepFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        step = getattr(record, "step", None) or "-"
        source = getattr(record, "source", None)
        record.tag = f"{step}:{source}" if source else step
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "step": getattr(record, "step", None),
            "source": getattr(record, "source", None),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = _JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = _StepFormatter("%(asctime)s %(levelname)-7s [%(tag)s] %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
