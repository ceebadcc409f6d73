"""`pulse dlq decrypt`: the original bytes of encrypted dead letters, for an operator who holds the key.

Envelopes come from the dead-letter topic (every partition from its beginning to the end offset it had when
the command started) or from a file of JSON lines (the replay's dlq.jsonl, or envelopes saved from the
topic). Each original message is written to stdout followed by a newline, in partition and offset order
(or line order). A record that is not an envelope (written while [dlq] encrypt was off) is skipped and
counted; an envelope that does not open stops the command, so a wrong key never yields partial output
that looks complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from engine.config import Settings
from engine.crypto import DLQ_ENVELOPE, EnvelopeError, Keyring, open_dlq_envelope
from engine.sinks import RDKAFKA_LOG
from engine.sources import consumer_error, watermark_offsets
from schemas.codec import loads

WATERMARK_PATIENCE_S = 15.0


class DecryptError(ValueError):
    """An envelope that does not open, or input that cannot be read as envelopes; one line for the user."""


@dataclass(frozen=True, slots=True)
class DecryptResult:
    decrypted: int
    skipped: int  # records that are not envelopes

    def line(self, where: str) -> str:
        skipped = f"; {self.skipped} record(s) not encrypted, skipped" if self.skipped else ""
        return f"pulse: decrypted {self.decrypted} dead letter(s) from {where}{skipped}"


def decrypt(records: Iterator[tuple[str, bytes | None]], keys: Keyring, out: BinaryIO) -> DecryptResult:
    """Writes the original bytes of every envelope in `records` ((where, value) pairs) to `out`."""
    decrypted = skipped = 0
    for where, value in records:
        if value is None or not value.strip():
            continue
        try:
            doc = loads(value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or DLQ_ENVELOPE not in doc:
            skipped += 1
            continue
        try:
            raw = open_dlq_envelope(keys, doc)
        except EnvelopeError as exc:
            raise DecryptError(f"{where}: {exc}") from None
        out.write(raw)
        out.write(b"\n")
        decrypted += 1
    out.flush()
    return DecryptResult(decrypted, skipped)


def file_records(path: Path) -> Iterator[tuple[str, bytes | None]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            yield f"{path} line {number}", line


def topic_records(settings: Settings) -> Iterator[tuple[str, bytes | None]]:
    """Every message of the dead-letter topic up to the end offsets of now, partition by partition."""
    topic = settings.topics.dlq
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            # assign() only: the group is never joined or committed.
            "group.id": f"pulse-dlq-decrypt-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "logger": RDKAFKA_LOG,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaException(f"dead-letter topic {topic} does not exist")
        for partition in sorted(meta.partitions):
            low, high = watermark_offsets(consumer, topic, partition, WATERMARK_PATIENCE_S)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high:
                messages = consumer.consume(500, 1.0)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        consumer_error(error, topic)
                        continue
                    offset = message.offset() or 0
                    position = offset + 1
                    if offset >= high:
                        break
                    yield f"{topic}[{partition}]@{offset}", message.value()
                if not messages:  # gaps (aborted or control records): ask where the consumer stands
                    (tp,) = consumer.position([TopicPartition(topic, partition)])
                    position = max(position, tp.offset)
        consumer.unassign()
    finally:
        consumer.close()
