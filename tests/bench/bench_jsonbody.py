"""The cost of reading request bodies through server/jsonbody.py, against plain json.loads, in process.

    .venv/bin/python tests/bench/bench_jsonbody.py [--rounds 7]

jsonbody.loads adds the depth limit (two byte counts, and for bodies with more brackets than the limit a
bracket scan in C), refuses NaN/Infinity and numbers out of range (a Python call per float), and decodes
with one decoder built once. Prints microseconds per body and the ratio to json.loads, measured in the same
run, for a typical small order and for a 1.6 MB body of 20,000 objects.
"""

from __future__ import annotations

import argparse
import json
import platform
import timeit

from server import jsonbody

SMALL = (
    b'{"customer_id": "C-42", "total": "19.90", "currency": "eur",'
    b' "items": [{"sku": "a", "qty": 2, "unit_price": 9.95}]}'
)
LARGE = json.dumps(
    {"rows": [{"id": i, "price": i * 1.5, "tags": ["x", "y"], "meta": {"a": {"b": [1, 2]}}} for i in range(20_000)]}
).encode()


def best(run: object, number: int, rounds: int) -> float:
    """Microseconds per call: the best of `rounds` timings of `number` calls."""
    return min(timeit.repeat(run, number=number, repeat=rounds)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    print(f"python {platform.python_version()} on {platform.machine()}, best of {rounds} rounds")
    for name, body, number in (("small order", SMALL, 20_000), ("1.6 MB, 20k objects", LARGE, 20)):
        baseline = best(lambda body=body: json.loads(body), number, rounds)
        ours = best(lambda body=body: jsonbody.loads(body), number, rounds)
        figures = f"json.loads {baseline:9.1f} us  jsonbody.loads {ours:9.1f} us  x{ours / baseline:.2f}"
        print(f"{name:22} {len(body):>9} B  {figures}")


if __name__ == "__main__":
    main()
