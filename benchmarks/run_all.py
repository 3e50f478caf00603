"""Run every benchmark at its `make bench` size and regenerate ``benchmarks/README.md``.

    python -m benchmarks.run_all              # what `make bench` runs (17 min on 2 cores, measured)
    python -m benchmarks.run_all --only peers cost_growth
    python -m benchmarks.run_all --no-readme  # run, but leave the README alone

Each benchmark runs in its own process (so its peak memory and compile cache are its
own) under a time limit; its output goes to ``benchmarks/out/NAME.log`` and its JSON
(and Markdown) into ``benchmarks/out/``. The Markdown tables it prints (lines starting
with ``|``, and the ``Machine:`` line above them) replace the block between
``<!-- make bench: NAME -->`` and ``<!-- /make bench: NAME -->`` in the README, with the
date and the arguments; text outside the blocks (the workload definitions, the
discussion, tables measured at other sizes) is left as it is. A benchmark that fails or
runs out of time leaves its block as it was, says so in the block's first line, and
makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
OUT = ROOT / "benchmarks" / "out"

#: name -> (arguments, time limit in seconds): sizes for about 20 minutes on 2 CPU cores
BENCHMARKS: dict[str, tuple[list[str], int]] = {
    # Tsit5 throughout (`--tail explicit`), the workload of the README tables; the full
    # lockstep vmap of a heavy-tailed ensemble would dominate: estimated above B = 64
    "ensemble_throughput": (
        ["--sizes", "256", "--t1", "100", "--vmap-full", "64", "--tail", "explicit"],
        300,
    ),
    "peers": (["--n", "32", "--t1", "100", "--repeats", "2"], 480),
    "torch_peers": (["--n", "32", "--t1", "10"], 360),
    "population_vs_empirical": (["--n", "32", "--t1", "100", "--tail", "explicit"], 300),
    "implicit_cost": (["--quick"], 120),
    "limit_labelling": (["--n", "32", "--gd-budget", "200000"], 420),
    "gaussian_risk": (["--widths", "4", "16", "64", "--qmc-max-log2", "12"], 120),
    "cost_growth": (
        [
            "--batches",
            "64,256,1024",
            "--widths",
            "4,16,64",
            "--points",
            "64,256,1024",
            "--depths",
            "1,2,4",
        ],  # fmt: skip
        360,
    ),
    # the tail row, the tight reference and GD at B = 64, t1 = 1000 (measured 143 s; 193 s
    # under load 2-4); the explicit and plain rows take 700-1000 s each at this size
    "kinks": (["--n", "64", "--skip-explicit", "--skip-plain"], 300),
}


def markdown_tables(text: str) -> str:
    """The Markdown tables in a benchmark's output, with the ``Machine:`` lines.

    **Arguments:**

    - `text`: the benchmark's standard output.

    **Returns:**

    The table lines (``|…``) and ``Machine:`` lines, with one blank line between
    separate tables; ``""`` if there are none.
    """
    blocks: list[list[str]] = []
    previous_kept = False
    for line in text.splitlines():
        keep = line.startswith("|") or line.startswith("Machine:")
        if keep:
            if not previous_kept:
                blocks.append([])
            blocks[-1].append(line.rstrip())
        previous_kept = keep
    return "\n\n".join("\n".join(b) for b in blocks)


def _block(name: str) -> re.Pattern:
    """The README block of benchmark `name`: groups (opening marker, body, closing marker)."""
    begin, end = f"<!-- make bench: {name} -->", f"<!-- /make bench: {name} -->"
    return re.compile(f"({re.escape(begin)}\n)(.*?)({re.escape(end)})", re.DOTALL)


def replace_block(readme: str, name: str, body: str) -> str:
    """`readme` with the block of benchmark `name` replaced by `body`.

    **Arguments:**

    - `readme`: the README text.
    - `name`: the benchmark's name (the marker is ``<!-- make bench: name -->``).
    - `body`: the new content of the block.

    **Returns:**

    The new README text. Raises ``KeyError`` if the README has no block for `name`.
    """
    pattern = _block(name)
    if not pattern.search(readme):
        raise KeyError(f"benchmarks/README.md has no block for {name!r}")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(3), readme, count=1)


def run_one(name: str, args: list[str], limit_s: int) -> tuple[bool, str, float]:
    """Run ``python -m benchmarks.NAME ARGS`` with a time limit; (ok, stdout, seconds)."""
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit_s,
        )
        ok, text = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        ok, text = False, out + f"\n[run_all] timed out after {limit_s} s\n"
    (OUT / f"{name}.log").write_text(text)
    return ok, text, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--no-readme", action="store_true", help="do not edit the README")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or list(BENCHMARKS):
        bench_args, limit_s = BENCHMARKS[name]
        print(f"\n=== {name} {' '.join(bench_args)} (limit {limit_s} s) ===", flush=True)
        ok, text, seconds = run_one(name, bench_args, limit_s)
        tables = markdown_tables(text)
        print(tables or text[-3000:], flush=True)
        if not ok:
            failed.append(name)
            print(f"{name} FAILED after {seconds:.0f} s (see benchmarks/out/{name}.log)")
        if args.no_readme:
            continue
        readme = README.read_text()
        date = datetime.date.today().isoformat()
        command = f"`python -m benchmarks.{name} {' '.join(bench_args)}`"
        if ok and tables:
            body = f"*Regenerated by `make bench` on {date} ({seconds:.0f} s): {command}.*\n\n"
            body += tables
        else:
            old = _block(name).search(readme)
            kept = old.group(2) if old else ""
            kept = re.sub(r"^\*\*`make bench` on .*? failed.*?\*\*\n\n", "", kept)
            body = f"**`make bench` on {date} failed or timed out ({command}); the table "
            body += f"below is from an earlier run.**\n\n{kept}"
        try:
            README.write_text(replace_block(readme, name, body))
        except KeyError as e:
            print(f"warning: {e}; README not updated for it", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
