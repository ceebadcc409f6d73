"""The README is the user's door: what it shows must be true of this repository as it stands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from demo.generator import GeneratorConfig, write_jsonl
from engine.config import _SECRETS, load_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_readme_stands_alone() -> None:
    assert "../shared" not in README
    assert "CONTRACT" not in README
    assert "NOTES.md" not in README


def test_the_configuration_block_is_valid_and_states_the_defaults(tmp_path: Path) -> None:
    block = re.findall(r"```toml\n(.*?)```", README, re.S)[0]  # the first is the full configuration
    path = tmp_path / "pulse.toml"
    path.write_text(block, encoding="utf-8")
    assert load_settings(path, env={}) == load_settings(None, env={})
    documented = tomllib.loads(block)
    defaults = load_settings(None, env={})
    for section in ("kafka", "topics", "redis", "engine", "metrics", "dlq"):
        # Secrets are not config-file keys (load_settings refuses them there), so the block leaves them out.
        known = {f for f in type(getattr(defaults, section)).__dataclass_fields__ if (section, f) not in _SECRETS}
        assert set(documented[section]) == known, section


def test_every_other_configuration_example_loads(tmp_path: Path) -> None:
    examples = re.findall(r"```toml\n(.*?)```", README, re.S)[1:]
    assert examples
    for number, example in enumerate(examples):
        path = tmp_path / f"example-{number}.toml"
        path.write_text(example, encoding="utf-8")
        # The secrets an example's sections leave to the environment (a login's password, say).
        shown = tomllib.loads(example)
        secrets = {
            f"PULSE_{s.upper()}_{k.upper()}": "example-secret" for s, k in _SECRETS if "username" in shown.get(s, {})
        }
        load_settings(path, env=secrets)


def test_the_service_walk_through_asks_for_a_user_the_demo_stream_has(tmp_path: Path) -> None:
    (user,) = re.findall(r"redis-cli hgetall pulse:user:(\S+)", README)
    # What `pulse demo` generates by default (demo/runner.py).
    write_jsonl(tmp_path / "events.jsonl", GeneratorConfig(users=300, accounts=300 // 8, days=60, seed=7))
    assert f'"user_id":"{user}"'.encode() in (tmp_path / "events.jsonl").read_bytes()


def test_the_metrics_table_lists_exactly_what_pulse_exports() -> None:
    from prometheus_client import REGISTRY

    import engine.metrics  # noqa: F401 - registers every metric

    suffix = {"counter": "_total", "gauge": "", "histogram": "", "unknown": ""}
    exported = {f.name + suffix[f.type] for f in REGISTRY.collect() if f.name.startswith("pulse_")}
    section = README[README.index("## Metrics") : README.index("## Delivery guarantees")]
    documented = set(re.findall(r"^\| `(pulse_[a-z_]+)` \|", section, re.M))
    assert documented == exported
