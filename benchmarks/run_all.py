"""Run every benchmark at its default (moderate) size; JSON + Markdown in benchmarks/out/.

python -m benchmarks.run_all            # what `make bench` runs
"""

import importlib
import sys

BENCHMARKS = [
    "benchmarks.ensemble_throughput",
    "benchmarks.population_vs_empirical",
    "benchmarks.implicit_cost",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        try:
            importlib.import_module(name).main([])
        except Exception as exc:  # report and go on with the others
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
