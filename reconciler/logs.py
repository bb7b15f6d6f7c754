"""Structured logs: one JSON object per line for collectors, readable lines on a terminal."""
from __future__ import annotations

import logging
import sys

import structlog

from . import defaults

LEVELS = defaults.LOG_LEVELS


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    if json_lines:
        renderers = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=True)]
    else:
        renderers = [structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # What libraries log through the standard library (the kubernetes client's errors, urllib3's
    # warnings) goes out as these lines too, not as the standard library's own "ERROR:root:..." lines.
    root = logging.getLogger()
    root.handlers[:] = [_Library()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


class _Library(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a library's malformed log call is still worth a line
            message = str(record.msg)
        say = getattr(_library, record.levelname.lower(), _library.warning)
        say(" ".join(message.split()), logger=record.name, exc_info=record.exc_info or False)


_library = structlog.get_logger("library")
