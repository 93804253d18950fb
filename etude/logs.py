"""Logging set-up for the entry points: structlog, JSON in containers, readable locally.

Library modules only call `structlog.get_logger()`; this module is the one place that
configures it. Every line carries the current trace and span ids when there is a span, and the
process's `service`: a library logging about another service names it `child_service` (or
similar), never `service`, which would overwrite the process's own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace


def _add_trace_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of the write, not at configuration: a
    process that swaps stderr (a test harness, a daemoniser) must not log into a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# The levels `--log-level` takes (an argparse choice: anything else is refused with the list).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(service: str, log_format: str = "console", level: str = "info") -> None:
    """Configures structlog once for a process. `log_format` is "console" or "json"."""
    renderers: list[Any]
    if log_format == "json":
        renderers = [
            # `_log.exception(...)` keeps its traceback as structured frames under "exception"
            # (without the frames' local variables: they may hold tokens or whole tensors).
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    elif log_format == "console":
        # The console renderer prints an exception's traceback itself.
        renderers = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    else:
        raise ValueError(f"log_format must be 'console' or 'json', got {log_format!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_context,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
