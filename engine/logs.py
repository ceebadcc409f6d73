"""Everything Pulse writes to stderr goes through `logging`, set up once by the CLI (`configure`).

Two formats:

* text (the default): the status lines read as they always have, `pulse: created topics ...`,
  `pulse: warning: ...`, `pulse: error: ...`; other records `pulse: WARNING pulse.sink: ...`.
* json: one JSON object per line: `ts` (ISO 8601, UTC), `level`, `logger`, `event` (the message), then the
  record's structured fields (`topic`, `partition`, `count`, ...), and `exc` with a traceback.

Status lines are logged with `info`, `warning` and `error` below, which carry the fields; plain
`logger.warning(...)` calls work too (no fields, the text look of before).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from engine.config import Settings

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PREFIX = "pulse: "
_TAG = "pulse_tag"  # set on status lines: "", "warning: " or "error: " after PREFIX in text
_FIELDS = "pulse_fields"
_TEXT = "pulse_text"  # what text mode shows instead of the message, when it differs (the banner)
_TAGS = {logging.WARNING: "warning: ", logging.ERROR: "error: "}

log = logging.getLogger("pulse")


class TextFormatter(logging.Formatter):
    """`pulse: message` for status lines, `pulse: LEVEL logger: message` for the other records."""

    def __init__(self) -> None:
        super().__init__("pulse: %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        tag = getattr(record, _TAG, None)
        if tag is None:
            return super().format(record)
        text = f"{PREFIX}{tag}{getattr(record, _TEXT, None) or record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (orjson escapes the newlines of a message or traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields: Mapping[str, Any] = getattr(record, _FIELDS, None) or {}
        doc.update((key, value) for key, value in fields.items() if key not in doc)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _StderrHandler(logging.Handler):
    """Writes each record to whatever sys.stderr is when it is emitted (a redirect, pytest's capture), flushed:
    a status line must be there when the process is killed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    log.critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def resolve(log_format: str | None, log_level: str | None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The format and level: the command line's, else PULSE_LOG_FORMAT / PULSE_LOG_LEVEL, else text / INFO.
    ValueError names the bad environment value (the command line's choices are checked by argparse)."""
    env = os.environ if env is None else env
    fmt = (log_format or env.get("PULSE_LOG_FORMAT") or "text").strip().lower()
    level = (log_level or env.get("PULSE_LOG_LEVEL") or "INFO").strip().upper()
    if fmt not in FORMATS:
        raise ValueError(f"PULSE_LOG_FORMAT must be {' or '.join(FORMATS)}, got {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"PULSE_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    return fmt, level


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """One stderr handler on the root logger, replacing the one an earlier call installed (other handlers,
    such as pytest's, are left alone). `level` applies to Pulse's loggers; libraries (and librdkafka through
    pulse.rdkafka) log WARNING and above, everything at DEBUG."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be {' or '.join(FORMATS)}, got {log_format!r}")
    threshold = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    libraries = threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    root.setLevel(libraries)
    log.setLevel(threshold)
    logging.getLogger("pulse.rdkafka").setLevel(libraries)
    json = log_format == "json"
    logging.captureWarnings(json)  # `warnings` print their own two-line format otherwise
    if json:
        sys.excepthook = _uncaught  # a traceback becomes one record with `exc`
    elif sys.excepthook is _uncaught:
        sys.excepthook = sys.__excepthook__


def _emit(logger: logging.Logger, level: int, event: str, tag: bool, text: str | None, fields: dict[str, Any]) -> None:
    event = event.removeprefix(PREFIX)  # messages built for the old print()s (exceptions, result lines)
    extra: dict[str, Any] = {_TAG: _TAGS.get(level, "") if tag else "", _FIELDS: fields}
    if text is not None:
        extra[_TEXT] = text
    logger.log(level, "%s", event, extra=extra, stacklevel=3)


def info(logger: logging.Logger, event: str, /, **fields: Any) -> None:
    """A status line: `pulse: event` in text, `event` plus `fields` in json."""
    _emit(logger, logging.INFO, event, True, None, fields)


def warning(logger: logging.Logger, event: str, /, **fields: Any) -> None:
    """`pulse: warning: event` in text."""
    _emit(logger, logging.WARNING, event, True, None, fields)


def error(logger: logging.Logger, event: str, /, *, tag: bool = True, **fields: Any) -> None:
    """`pulse: error: event` in text (`pulse: event` with tag=False: a message that reads as an error already)."""
    _emit(logger, logging.ERROR, event, tag, None, fields)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pulse-engine")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def banner(logger: logging.Logger, command: str, settings: Settings, **fields: Any) -> None:
    """The start line of `pulse run` / `pulse replay`: the effective configuration, every section and key, with
    the secrets masked (engine.config.masked_config). Text: one line ending in the config as JSON; json: the
    config as a nested object."""
    from engine.config import masked_config

    config = masked_config(settings)
    release = package_version()
    event = f"{command} starting (pulse-engine {release})"
    text = f"{event}; config {orjson.dumps(config).decode()}"
    _emit(logger, logging.INFO, event, True, text, {"command": command, "version": release, **fields, "config": config})
