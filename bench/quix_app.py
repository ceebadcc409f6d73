"""Phase (e) of the bench: the peer, Quix Streams, doing Pulse's per-user work as its docs show.

    .venv-quix/bin/python -m bench.quix_app --topic T --events N [--bootstrap HOST:PORT]

Runs in its own virtualenv (`make bench-quix-env`: quixstreams pinned there, never in Pulse's), with the
repository on the path so the *same* score functions are used. Per message, keyed by user: state in
RocksDB (Quix's default store) holding the active-day bitmap, counts by category, feature counts, NPS,
open tickets and the commercial stage; the six score components from the same signals; a record
produced to Kafka when the score moves by at least 2. Quix defaults stated: JSON deserialisation, one
process, RocksDB state, commit interval 5 s, `auto_offset_reset="earliest"`, a fresh consumer group per
run. Prints one JSON line: events, seconds, events/s, records produced.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import uuid
from typing import Any

from quixstreams import Application, State

from operators.lapse import LapseModel
from operators.scoring import COMPONENTS, ScoreModel, Signals, components, contributions, score_of
from operators.state import COMMERCIAL_STAGE, DAY_MS, SEVERITY_WEIGHT
from schemas.codec import parse_ts
from schemas.events import Vocabulary

MODEL = ScoreModel()
LAPSE = LapseModel()  # the expected gap's prior, as Pulse's defaults
VOCAB = Vocabulary()  # event type -> category, as Pulse's decoder


def update(value: dict[str, Any], state: State) -> dict[str, Any] | None:
    ts = value["ts"] if isinstance(value["ts"], int) else parse_ts(value["ts"])
    kind = value["type"]
    user: dict[str, Any] = state.get("user") or {
        "days": 0, "base": -1, "first_day": -1, "last_day": -1, "n_days": 0, "last_active": -1,
        "counts": {}, "features": {}, "nps": -1, "nps_ts": -1, "tickets": {}, "commercial": "visitor",
        "commercial_ts": -1, "score": -1.0,
    }  # fmt: skip
    category = VOCAB.category(kind).name.lower()
    user["counts"][category] = user["counts"].get(category, 0) + 1
    props = value.get("properties") or {}
    if category == "activity":
        day = ts // DAY_MS
        if user["base"] < 0:
            user["base"] = day
        if day >= user["base"] and not user["days"] >> (day - user["base"]) & 1:
            user["days"] |= 1 << (day - user["base"])
            user["n_days"] += 1
            user["first_day"] = day if user["first_day"] < 0 else min(user["first_day"], day)
            user["last_day"] = max(user["last_day"], day)
        user["last_active"] = max(user["last_active"], ts)
        if value.get("feature"):
            user["features"][value["feature"]] = user["features"].get(value["feature"], 0) + 1
    elif category == "sentiment" and isinstance(props.get("score"), int):
        user["nps"], user["nps_ts"] = props["score"], ts
    elif category == "support" and props.get("ticket_id") is not None:
        key = str(props["ticket_id"])
        user["tickets"][key] = (
            0.0 if kind.endswith("resolved") else SEVERITY_WEIGHT.get(str(props.get("severity")), 1.0)
        )
    elif category == "commercial" and kind in COMMERCIAL_STAGE:
        user["commercial"], user["commercial_ts"] = COMMERCIAL_STAGE[kind], ts
    record = _score(user, ts, value["user_id"])
    state.set("user", user)
    return record


def _score(user: dict[str, Any], as_of: int, user_id: str) -> dict[str, Any] | None:
    gaps = max(user["n_days"] - 1, 0)
    span = user["last_day"] - user["first_day"] if gaps else 0
    gap = (span + LAPSE.prior_weight * LAPSE.prior_gap_days) / (gaps + LAPSE.prior_weight)
    active = user["last_active"] >= 0
    window = min(MODEL.frequency_window_days, max(0, as_of // DAY_MS - user["first_day"])) if active else 0
    low = as_of // DAY_MS - window - user["base"]
    recent = (user["days"] >> max(low, 0)).bit_count() if active else 0
    features = user["features"]
    s = Signals(
        days_since_active=(as_of - user["last_active"]) / DAY_MS if active else None,
        expected_gap_days=gap,
        rhythm_evidence=gaps + LAPSE.prior_weight,
        active_days_window=recent,
        window_days=window,
        key_features_used=sum(1 for f in MODEL.key_features if f in features),
        feature_uses=sum(features.values()),
        nps_score=user["nps"] if user["nps"] >= 0 else None,
        nps_age_days=max(0, as_of - user["nps_ts"]) / DAY_MS,
        support_load=sum(user["tickets"].values()),
        commercial=user["commercial"],
        has_tickets=bool(user["tickets"]),
        has_commercial=user["commercial_ts"] >= 0,
    )
    values = components(MODEL, s)
    score = score_of(contributions(MODEL, values, s.present))
    if user["score"] >= 0 and abs(score - user["score"]) < MODEL.min_delta:
        return None
    user["score"] = score
    return {"user_id": user_id, "score": score, "components": dict(zip(COMPONENTS, values, strict=True))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_app")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-quix-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=f"pulse-bench-quix-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
        )
        source = app.topic(args.topic, value_deserializer="json")
        out = app.topic(f"{args.topic}-quix-out", value_serializer="json")
        seen = [0, 0, 0.0]  # events, records, first-event time

        def count(value: dict[str, Any]) -> dict[str, Any]:
            if not seen[0]:
                seen[2] = time.perf_counter()
            seen[0] += 1
            if seen[0] >= args.events:
                app.stop()
            return value

        sdf = app.dataframe(source)
        sdf = sdf.apply(count).apply(update, stateful=True).filter(lambda record: record is not None)
        sdf = sdf.update(lambda _: seen.__setitem__(1, seen[1] + 1)).to_topic(out)
        app.run()
        seconds = time.perf_counter() - seen[2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"events": seen[0], "seconds": round(seconds, 3), "eps": round(seen[0] / seconds),
                      "records": seen[1], "peak_rss_kib": peak}))  # fmt: skip
    return 0 if seen[0] >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
