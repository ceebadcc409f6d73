"""The CDNOW sample (Fader, Hardie & Lee 2005) as Pulse events, for `pulse fit`/`pulse evaluate` examples.

    python -m demo.cdnow [OUT]      # default: cdnow.jsonl; needs `make testdata` (the lifetimes wheel)

2,357 customers' purchases in 1997-98, one `purchase` (an activity) per transaction, read from the
`lifetimes` wheel that `make testdata` downloads hash-checked.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

WHEEL = Path(__file__).resolve().parents[1] / ".cache" / "testdata" / "Lifetimes-0.11.3-py3-none-any.whl"


def write_cdnow(path: Path, wheel: Path = WHEEL) -> Path:
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel} is missing: run `make testdata` (make test does it)")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("lifetimes/datasets/CDNOW_sample.txt").decode()
    lines = []
    for n, row in enumerate(text.splitlines()):
        customer, _, day, *_ = row.split()
        ts = f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z"
        lines.append(f'{{"event_id":"c{n}","user_id":"{customer}","type":"purchase","ts":"{ts}"}}')
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "cdnow.jsonl")
    try:
        write_cdnow(out)
    except FileNotFoundError as exc:
        print(f"demo.cdnow: {exc}", file=sys.stderr)
        return 2
    print(f"demo.cdnow: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
