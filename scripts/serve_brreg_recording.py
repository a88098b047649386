"""Serve the Enhetsregisteret recordings on loopback, for trying the register feed by hand.

    .venv/bin/python scripts/serve_brreg_recording.py --port 8099
    # watch the printed W1..W3 numbers in a watch list, then:
    CREDITWATCH_BRREG_BASE_URL=http://127.0.0.1:8099 .venv/bin/creditwatch registers sync --once
    # or run the server with CREDITWATCH_BRREG_ENABLED=true and that base URL

The recordings (tests/fixtures/brreg) are filled with valid organisation numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.identifiers import norwegian_numbers
from tests.registers_server import Register, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--start", type=int, default=82_000_000, help="first number to derive from")
    args = parser.parse_args()
    numbers = dict(
        zip(("W1", "W2", "W3", "U1"), norwegian_numbers(4, start=args.start), strict=True)
    )
    with serve(Register(numbers), args.port) as url:
        print(f"serving the Enhetsregisteret recording at {url}")
        for key, number in numbers.items():
            role = "unwatched" if key == "U1" else "watch this one"
            print(f"  {key}  NO {number}  ({role})")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
