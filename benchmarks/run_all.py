"""Run every benchmark at its default (moderate) size; JSON + Markdown in benchmarks/out/.

python -m benchmarks.run_all            # what `make bench` runs
"""

import importlib
import sys

# (module, arguments): moderate sizes, minutes each on 2 CPU cores
BENCHMARKS = [
    ("benchmarks.ensemble_throughput", []),
    ("benchmarks.peers", ["--n", "32", "--t1", "100"]),
    ("benchmarks.population_vs_empirical", ["--n", "32", "--t1", "100"]),
    ("benchmarks.implicit_cost", []),
    ("benchmarks.limit_labelling", ["--n", "1024"]),
    ("benchmarks.gaussian_risk", []),
]


def main() -> int:
    failed = []
    for name, args in BENCHMARKS:
        print(f"\n=== {name} {' '.join(args)} ===", flush=True)
        try:
            importlib.import_module(name).main(args)
        except Exception as exc:  # report and go on with the others
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
