"""Gradient-flow cost: exact 1-d population risk vs. empirical risks.

Workload (docs: benchmarks/README.md): ``ShallowReLU`` with ``d_in = 1``, width 16, target
``f(x) = 2x + 1`` on ``[0, 1]``, ``N(0, 1)`` initialisation with ``v`` scaled by
``1/sqrt(16)``, gradient flow (``gflow_jax.GradientFlow``: Tsit5 + the default PID
controller, float64, and the stiff-tail phase ``--tail auto``) to ``t = 1e4`` for ``--n``
initialisations (default 256), with three risks:

- the exact population risk ``PopulationRisk.uniform_1d`` (the integral over ``[0, 1]``
  in closed form between the kinks of the network; its generalised gradient is
  continuous);
- the empirical risk on 64 and on 1024 evenly spaced points (the gradient field jumps
  whenever a kink crosses a data point, which is what makes adaptive solvers slow).

Reports per risk: wall time (compilation included), solver steps per trajectory
(median, p90, max), the fraction of them taken by the tail solver, the fraction of
rejected steps, how many runs hit ``--max-steps``, outcomes, and the median *population*
risk of the final models (exact, so the three columns are comparable). Writes JSON to
``benchmarks/out/`` and prints a Markdown table.

    python -m benchmarks.population_vs_empirical                 # 256 inits, t1 = 1e4
    python -m benchmarks.population_vs_empirical --n 32 --t1 100 # quick run (~2 min)
    python -m benchmarks.population_vs_empirical --solver kvaerno5 --tail explicit

``--tail explicit`` keeps the transient ``--solver`` throughout (the workload of the
tables in benchmarks/README.md); ``--tail kvaerno5`` uses Kvaerno5 for the stiff tail.
With ``--solver kvaerno5 --tail explicit`` (implicit throughout) the long tail to
``t = 1e4`` shows itself *stiff*: on the exact risk Kvaerno5 needs ~10^3 steps per
trajectory where explicit Tsit5 needs 10^4–10^5.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax as gf  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


class CompileTimer:
    """Sums JAX's lowering and XLA-compilation event durations.

    Tracing is not counted (nested traces would be counted twice), so the per-step
    figures still include Python tracing time; at the default size it is negligible.
    """

    EVENTS = (
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, name, duration, **kwargs):
        if name in self.EVENTS:
            self.total += duration


def make_init(width: int):
    """``key -> ShallowReLU``: every entry ``N(0, 1)``, then ``v ← v / sqrt(width)``."""

    def init(key):
        model = gf.ShallowReLU(1, width, key=key, init="normal")
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    return init


SOLVERS = {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}
TAILS = {"auto": lambda: "auto", "explicit": lambda: "explicit", "kvaerno5": diffrax.Kvaerno5}


def run_flows(init, risk, keys, t1: float, flow: gf.GradientFlow, chunk_size: int):
    """:func:`gflow_jax.run_ensemble` of `flow` from every key (limit classification off)."""
    return gf.run_ensemble(
        init, risk, keys, t1, flow, n_save=8, limits=None, chunk_size=chunk_size, progress=False
    )


def benchmark(
    n: int = 256,
    *,
    width: int = 16,
    t1: float = 1e4,
    max_steps: int = 200_000,
    chunk_size: int = 256,
    seed: int = 0,
    data_sizes: tuple[int, ...] = (64, 1024),
    solver: str = "tsit5",
    tail: str = "auto",
) -> dict:
    """Run the three flows; return a JSON-serialisable record."""
    target = gf.Affine(2.0, 1.0)
    exact = gf.PopulationRisk.uniform_1d(target, 0.0, 1.0)
    risks = {"exact population": exact}
    for m in data_sizes:
        risks[f"empirical, {m} points"] = gf.EmpiricalRisk(*gf.sample_data(target, m))
    init = make_init(width)
    keys = jax.random.split(jax.random.key(seed), n)
    population_risk = eqx.filter_jit(eqx.filter_vmap(exact))
    flow = gf.GradientFlow(solver=SOLVERS[solver](), tail=TAILS[tail](), max_steps=max_steps)
    timer = CompileTimer()
    rows = []
    for name, risk in risks.items():
        compile_before = timer.total
        start = time.perf_counter()
        ens = run_flows(init, risk, keys, t1, flow, chunk_size)
        jax.block_until_ready(ens.num_steps)
        wall = time.perf_counter() - start
        compile_s = timer.total - compile_before
        steps, rejected = np.asarray(ens.num_steps), np.asarray(ens.num_rejected)
        outcome = np.asarray(ens.outcome)
        exact_final = np.asarray(population_risk(ens.models))
        rows.append(
            {
                "risk": name,
                "wall_s": wall,
                "compile_s": compile_s,
                "steps_median": float(np.median(steps)),
                "steps_p90": float(np.percentile(steps, 90)),
                "steps_max": int(steps.max()),
                "steps_total": int(steps.sum()),
                "tail_steps_fraction": float(np.sum(ens.num_tail_steps) / max(steps.sum(), 1)),
                "rejected_fraction": float(rejected.sum() / max(steps.sum(), 1)),
                "hit_max_steps": int(np.sum(steps >= max_steps)),
                "t_stop_median": float(np.median(np.asarray(ens.t_stop))),
                "us_per_member_step": 1e6 * (wall - compile_s) / max(int(steps.sum()), 1),
                "outcomes": {o.name: int(np.sum(outcome == int(o))) for o in gf.Outcome},
                "final_risk_median": float(np.median(np.asarray(ens.final_risk))),
                "final_population_risk_median": float(np.median(exact_final)),
            }
        )
        print(f"  {name}: {wall:.1f} s", flush=True)
    return {
        "workload": {
            "model": f"ShallowReLU(d_in=1, width={width}), N(0,1) init, v / sqrt({width})",
            "target": "2x + 1 on [0, 1]",
            "flow": f"GradientFlow to t1={t1:g}, {SOLVERS[solver].__name__} + default PID, "
            f"tail={tail} (float64)",
            "inits": n,
            "max_steps": max_steps,
            "chunk_size": chunk_size,
            "seed": seed,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": jax.local_device_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "rows": rows,
    }


def markdown(record: dict) -> str:
    """The Markdown table of a :func:`benchmark` record."""
    w = record["workload"]
    lines = [
        f"{w['inits']} inits, {w['model']}, target {w['target']}, {w['flow']}, "
        f"max_steps={w['max_steps']}. Wall time includes compilation (column 'compile'); "
        "µs/member-step = (wall − compile) / total solver steps.",
        "",
        "| risk | wall [s] | compile [s] | µs/member-step | steps median | p90 | max | rejected | "
        "tail steps | hit max_steps | median t_stop | converged | median final L (own) | "
        "median final L (population) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['risk']} | {r['wall_s']:.1f} | {r['compile_s']:.1f} | "
            f"{r['us_per_member_step']:.0f} | "
            f"{r['steps_median']:.0f} | {r['steps_p90']:.0f} | {r['steps_max']} | "
            f"{100 * r['rejected_fraction']:.0f} % | "
            f"{100 * r.get('tail_steps_fraction', 0.0):.0f} % | {r['hit_max_steps']} | "
            f"{r['t_stop_median']:.3g} | {r['outcomes']['CONVERGED']}/{w['inits']} | "
            f"{r['final_risk_median']:.2e} | {r['final_population_risk_median']:.2e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="number of initialisations")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--t1", type=float, default=1e4)
    parser.add_argument("--max-steps", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="tsit5")
    parser.add_argument(
        "--tail",
        choices=sorted(TAILS),
        default="auto",
        help="GradientFlow(tail=...): the stiff-tail phase (auto: exponential integrator)",
    )
    parser.add_argument(
        "--data-sizes",
        type=int,
        nargs="*",
        default=[64, 1024],
        help="numbers of evenly spaced data points for the empirical risks",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_steps < 1 or any(m < 2 for m in args.data_sizes):
        parser.error("--n and --max-steps must be positive, --data-sizes at least 2.")
    record = benchmark(
        args.n,
        width=args.width,
        t1=args.t1,
        max_steps=args.max_steps,
        chunk_size=args.chunk_size,
        seed=args.seed,
        data_sizes=tuple(args.data_sizes),
        solver=args.solver,
        tail=args.tail,
    )
    table = markdown(record)
    record["markdown"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"population_vs_empirical_n{args.n}_t{args.t1:g}_{args.solver}_{args.tail}.json"
    path = args.out / name
    path.write_text(json.dumps(record, indent=2))
    print(table)
    print(f"\nwritten: {path}")
    return table


if __name__ == "__main__":
    main()
