"""The demo stream as Segment / RudderStack spec messages (`pulse demo --format segment`).

One native line becomes one Segment message that Pulse translates back to the same event (the default map
of schemas.segment, inverted), so a replay in segment mode gives the native replay's outputs. Lines that are
not JSON objects stay as they are; deliberately broken events stay broken the same way (same dead-letter code).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from demo.generator import GeneratorConfig, generate
from schemas.codec import format_ts
from schemas.events import MAX_TS_MS, MIN_TS_MS
from schemas.segment import DEFAULT_EVENTS

# Native type -> track event name, where the default map has several names for a type or none to invert.
TRACK_NAMES = {
    "session_start": "Session Started",
    "session_end": "Session Ended",
    "signed_up": "Signed Up",
    "seat_added": "Account Added User",
    "seat_removed": "Account Removed User",
    "nps_response": "NPS Submitted",
    "support_ticket_opened": "Support Ticket Opened",
    "support_ticket_resolved": "Support Ticket Resolved",
    "subscription_cancelled": "Subscription Cancelled",
    "plan_changed": "Plan Changed",
}
_PLAN_NAMES = {"up": "Plan Upgraded", "down": "Plan Downgraded"}
# What a visitor does before they have an account: sent with the browser's anonymousId too (a visitor's
# events with the anonymousId alone would be another person until an `alias` joins them: operators.identity).
_ANONYMOUS = frozenset({"page_view", "newsletter_subscribed", "demo_requested"})
_LIBRARY = {"name": "analytics-python", "version": "2.3.2"}


def _default_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for name, target in DEFAULT_EVENTS:
        if ":" not in target:
            names.setdefault(target, name)
    return {**names, **TRACK_NAMES}


_NAMES = _default_names()


def _title(kind: str) -> str:
    return " ".join(word.capitalize() for word in kind.split("_"))


def _timestamp(ts: Any) -> Any:
    """ISO 8601 as SDKs write it: epoch milliseconds become UTC, `+05:30` offsets lose their colon. Values no
    date can express (the deliberately broken ones) stay as they are."""
    if isinstance(ts, int) and not isinstance(ts, bool) and MIN_TS_MS <= ts <= MAX_TS_MS:
        return format_ts(ts)
    if isinstance(ts, str) and len(ts) > 6 and ts[-6] in "+-" and ts[-3] == ":":
        return ts[:-3] + ts[-2:]
    return ts


def to_segment(doc: dict[str, Any]) -> dict[str, Any]:
    """One native event document as the Segment call that means the same."""
    kind = doc.get("type")
    props = doc.get("properties")
    account = doc.get("account_id")
    message: dict[str, Any] = {}
    if kind == "page_view":
        message.update(type="page", name="App")
    else:
        message["type"] = "track"
        if kind == "feature_used":
            props = {**(props or {}), "feature": doc.get("feature")}
        elif kind == "experiment_exposed" and isinstance(props, dict):
            props = {k: v for k, v in props.items() if k not in ("experiment", "variant")}
            props.update(experiment_name=doc["properties"].get("experiment"))
            props.update(variation_name=doc["properties"].get("variant"))
        name = _NAMES.get(kind, _title(kind)) if isinstance(kind, str) else kind
        if kind == "plan_changed" and isinstance(props, dict) and props.get("direction") in _PLAN_NAMES:
            name = _PLAN_NAMES[props["direction"]]
            props = {k: v for k, v in props.items() if k != "direction"}
        message["event"] = name
    if "event_id" in doc:
        message["messageId"] = doc["event_id"]
    if "user_id" in doc:
        message["userId"] = doc["user_id"]
        if kind in _ANONYMOUS and account is None and isinstance(doc["user_id"], str):
            message["anonymousId"] = f"anon-{doc['user_id']}"
    context: dict[str, Any] = {"library": _LIBRARY, "locale": "en-US"}
    if account is not None:
        context["groupId"] = account
    message.update(context=context, properties=props, integrations={"All": True})
    if "ts" in doc:
        message["timestamp"] = _timestamp(doc["ts"])
    return message


def convert_line(line: bytes) -> bytes:
    """A native JSON line as a Segment message; a line that is not a JSON object is left as it is."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    return orjson.dumps(to_segment(doc)) if isinstance(doc, dict) else line


def generate_segment(config: GeneratorConfig) -> Iterator[bytes]:
    """The demo stream (demo.generator.generate) as Segment messages, line for line."""
    for line in generate(config):
        yield convert_line(line)


def write_segment_jsonl(path: Path, config: GeneratorConfig) -> int:
    """Writes the Segment form of the demo stream as JSON lines; returns the number of lines."""
    count = 0
    with path.open("wb") as out:
        for line in generate_segment(config):
            out.write(line + b"\n")
            count += 1
    return count
