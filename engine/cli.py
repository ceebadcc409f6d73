"""The `pulse` command line: replay, run, restore-profiles, dlq decrypt, export, erase, fit, evaluate, fit-score,
demo, console; fatal problems exit non-zero with a one-line reason."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from engine import logs
from engine.config import ConfigError, Settings, load_settings
from schemas.codec import parse_ts

log = logging.getLogger("pulse.cli")


def _until(value: str) -> int:
    try:
        return parse_ts(int(value) if value.lstrip("-").isdigit() else value)
    except Exception:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time with offset or epoch ms: {value!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error: argparse's usage and message in text, one error record in json."""
        if _early_format() == "json":
            logs.error(log, f"{self.prog}: {message}", usage=self.format_usage().strip())
            self.exit(2)
        super().error(message)


_ARGV: Sequence[str] = ()


def _early_format() -> str:
    """The log format before the arguments are parsed (for their errors): --log-format or PULSE_LOG_FORMAT."""
    argv = list(_ARGV)
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--log-format="):
            return arg.partition("=")[2]
    return os.environ.get("PULSE_LOG_FORMAT", "text").strip().lower()


def _log_options(parser: argparse.ArgumentParser, default: object) -> None:
    """Before or after the command: `pulse --log-format json run` and `pulse run --log-format json` both work."""
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=default,
        help="stderr as text (default) or one JSON object per line; env PULSE_LOG_FORMAT",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=logs.LEVELS,
        default=default,
        help="least severe level of Pulse's messages (default INFO); env PULSE_LOG_LEVEL",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pulse", description="Real-time customer health from product events.")
    _log_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)

    replay = sub.add_parser("replay", help="event-time replay of a JSON-lines file (.jsonl or .jsonl.gz)")
    replay.add_argument("input", type=Path)
    replay.add_argument("--out", type=Path, required=True, help="output folder")
    replay.add_argument("--config", type=Path)
    replay.add_argument("--until", type=_until, help="advance event time to TIME at the end")

    run = sub.add_parser("run", help="the long-running Kafka → Kafka + Redis service")
    run.add_argument("--config", type=Path)
    run.add_argument("--process-id", "-i", type=int, help="this process's index in a cluster")
    run.add_argument("--addresses", "-a", help="host:port of every cluster process, ';'-separated")

    restore = sub.add_parser(
        "restore-profiles", help="rewrite the Redis profile hashes from the compacted profile topics"
    )
    restore.add_argument("--config", type=Path)

    dlq = sub.add_parser("dlq", help="dead letters: decrypt the envelopes [dlq] encrypt writes")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    decrypt = dlq_sub.add_parser("decrypt", help="write the original bytes of encrypted dead letters to stdout")
    decrypt.add_argument("file", type=Path, nargs="?", help="JSON lines of envelopes (e.g. a replay's dlq.jsonl)")
    decrypt.add_argument("--from-topic", action="store_true", help="read the dead-letter topic to its end instead")
    decrypt.add_argument("--config", type=Path)

    export = sub.add_parser("export", help="print as JSON what the running deployment holds about one person")
    erase = sub.add_parser("erase", help="erase one person through the input topic and wait until it is applied")
    for person in (export, erase):
        person.add_argument("user_id")
        person.add_argument("--config", type=Path)
        person.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most (default 60)")

    fit = sub.add_parser("fit", help="fit the BG/NBD lapse model on history; prints its parameters as JSON")
    fit.add_argument("input", type=Path)
    fit.add_argument("--calibration-end", type=_until, required=True, help="events after TIME are ignored")
    fit.add_argument("--unit", choices=("day", "week"), default="week")
    fit.add_argument("--config", type=Path)

    evaluate = sub.add_parser(
        "evaluate", help="backtest: does the score rank users by whether they come back? prints JSON (AUCs)"
    )
    evaluate.add_argument("input", type=Path)
    evaluate.add_argument("--calibration-end", type=_until, required=True, help="score as of TIME")
    evaluate.add_argument("--horizon-days", type=int, required=True, help="label: active in (TIME, TIME + N days]")
    evaluate.add_argument("--config", type=Path)
    evaluate.add_argument("--plot", type=Path, help="also draw the ROC curves and retention by decile (PNG)")

    fit_score = sub.add_parser(
        "fit-score", help="learn the [score] weights and rhythm scales from history before --calibration-end"
    )
    fit_score.add_argument("input", type=Path)
    fit_score.add_argument("--calibration-end", type=_until, required=True, help="history after TIME is not used")
    fit_score.add_argument("--horizon-days", type=int, required=True, help="the horizon the score should predict")
    fit_score.add_argument("--out", type=Path, required=True, help="config file to write (TOML)")
    fit_score.add_argument("--config", type=Path, help="start from this config; its other sections are kept")

    demo = sub.add_parser("demo", help="generate a realistic event stream, replay it and summarise")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--config", type=Path)
    demo.add_argument("--users", type=int, default=300)
    demo.add_argument("--days", type=int, default=60)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--format", choices=("pulse", "segment"), default="pulse", help="segment: the stream as Segment spec messages"
    )

    console = sub.add_parser("console", help="serve the read-only CS web console over the Redis profiles")
    console.add_argument("--config", type=Path)
    console.add_argument("--host", help="address to bind (default console.host, 127.0.0.1)")
    console.add_argument("--port", type=int, help="port to bind (default console.port, 8080; 0 = any free port)")
    for command in [*sub.choices.values(), *dlq_sub.choices.values()]:
        _log_options(command, argparse.SUPPRESS)  # given after the command, it overrides
    return parser


def _settings(path: Path | None) -> Settings:
    return load_settings(path)


def _dlq_decrypt(args: argparse.Namespace, settings: Settings) -> int:
    """`pulse dlq decrypt`: from a file or from the topic, never both."""
    from confluent_kafka import KafkaException

    from engine.crypto import dlq_reader_keyring
    from engine.dlq import DecryptError, decrypt, file_records, topic_records

    if (args.file is None) == (not args.from_topic):
        logs.error(log, "dlq decrypt takes a FILE or --from-topic (one of them)")
        return 2
    keys = dlq_reader_keyring(settings)
    where = settings.topics.dlq if args.from_topic else str(args.file)
    records = topic_records(settings) if args.from_topic else file_records(args.file)
    try:
        result = decrypt(records, keys, sys.stdout.buffer)
    except DecryptError as exc:
        logs.error(log, str(exc))
        return 1
    except KafkaException as exc:
        _kafka_error(settings, exc)
        return 1
    logs.info(log, result.line(where), source=where, decrypted=result.decrypted, skipped=result.skipped)
    return 0


def _kafka_error(settings: Settings, exc: Exception) -> None:
    servers = settings.kafka.bootstrap_servers
    logs.error(log, f"Kafka at {servers}: {exc}", bootstrap_servers=servers)


def main(argv: Sequence[str] | None = None) -> int:
    global _ARGV
    _ARGV = sys.argv[1:] if argv is None else argv
    early = _early_format()  # for the errors of the arguments themselves
    logs.configure(early if early in logs.FORMATS else "text")
    args = _parser().parse_args(argv)
    try:
        logs.configure(*logs.resolve(args.log_format, args.log_level))
    except ValueError as exc:
        logs.error(log, str(exc))
        return 2
    try:
        settings = _settings(args.config)
        if args.command == "replay":
            from engine.replay import replay

            result = replay(args.input, args.out, settings, args.until)
            s = result.summary
            logs.info(
                log,
                f"{s['events_in']} events: {s['applied']} applied, {s['duplicates']} duplicate, "
                f"{s['rejected']} rejected; {s['users']} users; outputs in {result.out_dir}",
                **{k: s[k] for k in ("events_in", "applied", "duplicates", "rejected", "users")},
                out_dir=str(result.out_dir),
            )
        elif args.command == "run":
            from confluent_kafka import KafkaException

            from engine.crypto import SnapshotError
            from engine.service import run_service
            from engine.sinks import RedisUnavailableError

            addresses = args.addresses.split(";") if args.addresses else None
            try:
                run_service(settings, args.process_id, addresses)
            except KafkaException as exc:
                _kafka_error(settings, exc)
                return 1
            except RedisUnavailableError as exc:  # at start (the restore check); in the flow bytewax reports it
                logs.error(log, str(exc))
                return 1
            except SnapshotError as exc:  # a snapshot refused at resume: its message says which and why
                logs.error(log, str(exc), tag=False)
                return 1
        elif args.command == "restore-profiles":
            from confluent_kafka import KafkaException

            from engine.restore import run_restore
            from engine.sinks import RedisUnavailableError

            try:
                run_restore(settings)
            except KafkaException as exc:
                _kafka_error(settings, exc)
                return 1
            except RedisUnavailableError as exc:
                logs.error(log, str(exc))
                return 1
        elif args.command == "dlq":
            return _dlq_decrypt(args, settings)
        elif args.command in ("export", "erase"):
            from engine.privacy import run_command

            return run_command(args.command, args.user_id, settings, args.timeout)
        elif args.command == "fit":
            from engine.fit import fit_file
            from schemas.codec import dumps

            print(dumps(fit_file(args.input, args.calibration_end, args.unit, settings)).decode())
        elif args.command == "evaluate":
            from engine.evaluate import evaluate_file
            from schemas.codec import dumps

            backtest = evaluate_file(args.input, args.calibration_end, args.horizon_days, settings, args.plot)
            print(dumps(backtest).decode())
            if args.plot is not None:
                logs.info(log, f"wrote {args.plot}", path=str(args.plot))
        elif args.command == "fit-score":
            from engine.fitscore import fit_score_file
            from schemas.codec import dumps

            fitted = fit_score_file(
                args.input, args.calibration_end, args.horizon_days, args.out, settings, args.config
            )
            print(dumps(fitted).decode())
            logs.info(log, f"wrote {args.out} (model {fitted['model']})", path=str(args.out), model=fitted["model"])
        elif args.command == "demo":
            try:  # the demo package ships with a source checkout only, not in the service image
                from demo.runner import run_demo
            except ImportError as exc:
                if exc.name not in ("demo", "demo.runner"):
                    raise
                logs.error(
                    log,
                    "`pulse demo` needs a source checkout (the demo package is not in this installation): "
                    "run `make demo` from the repository",
                    tag=False,
                )
                return 2
            run_demo(args.out, settings, users=args.users, days=args.days, seed=args.seed, input_format=args.format)
        elif args.command == "console":
            from engine.console.server import run_console

            try:
                return run_console(settings, args.host, args.port)
            except OSError as exc:  # the address is in use or cannot be bound
                host = args.host or settings.console.host
                port = settings.console.port if args.port is None else args.port
                logs.error(log, f"console: cannot listen on {host}:{port}: {exc}")
                return 1
    except (ConfigError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as exc:
        logs.error(log, str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
