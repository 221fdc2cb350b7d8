"""Log lines for operations: one line per refused request, and JSON lines as an option.

Writes to the `digits.serving` logger (BentoML's handlers print it). A client's mistake (4xx) or
backpressure (503) is one WARNING line naming route, status and reason, never a traceback; an
unexpected failure (5xx) keeps BentoML's ERROR with traceback.
"""

from __future__ import annotations

import json
import logging
import time

from serving.service.prometheus import REFUSED

log = logging.getLogger("digits.serving")


def log_refusal(route: str, status: int, reason: str) -> None:
    """One line for a request the service refused, and its count in the metrics."""
    REFUSED.labels(route=route, status=str(status)).inc()
    log.warning("refused %s %d: %s", route, status, reason)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def use_json_logs() -> None:
    """Switch every handler BentoML configured (root and named loggers) to JSON lines."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            handler.setFormatter(JsonFormatter())
