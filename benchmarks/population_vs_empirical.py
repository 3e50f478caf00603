"""Gradient-flow cost: exact 1-d population risk vs. empirical risks.

Workload (docs: benchmarks/README.md): ``ShallowReLU`` with ``d_in = 1``, width 16, target
``f(x) = 2x + 1`` on ``[0, 1]``, ``N(0, 1)`` initialisation with ``v`` scaled by
``1/sqrt(16)``, gradient flow (Tsit5 + the default PID controller, float64) to
``t = 1e4`` for ``--n`` initialisations (default 256), with three risks:

- the exact population risk ``PopulationRisk.uniform_1d`` (MATH.md §4; continuous
  generalised gradient);
- the empirical risk on 64 and on 1024 evenly spaced points (the gradient field jumps
  whenever a kink crosses a data point, which is what makes adaptive solvers slow).

Reports per risk: wall time (compilation included), solver steps per trajectory
(median, p90, max), fraction of rejected steps, how many runs hit ``--max-steps``,
outcomes, and the median *population* risk of the final models (exact, so the three
columns are comparable). Writes JSON to ``benchmarks/out/`` and prints a Markdown table.

    python -m benchmarks.population_vs_empirical                 # 256 inits, t1 = 1e4
    python -m benchmarks.population_vs_empirical --n 32 --t1 100 # quick run (~2 min)
    python -m benchmarks.population_vs_empirical --solver kvaerno5 --data-sizes 64

``--solver kvaerno5`` (implicit) shows that the long tail to ``t = 1e4`` is *stiff*: on
the exact risk it needs ~10^3 steps per trajectory where Tsit5 needs 10^4–10^5.
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

from gflow_jax.models.shallow import ShallowReLU  # noqa: E402
from gflow_jax.outcomes import Outcome  # noqa: E402
from gflow_jax.risks.empirical import EmpiricalRisk  # noqa: E402
from gflow_jax.risks.population import PopulationRisk  # noqa: E402
from gflow_jax.risks.targets import Affine, sample_data  # noqa: E402

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
        model = ShallowReLU(1, width, key=key, init="normal")
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    return init


SOLVERS = {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}


def run_flows(init, risk, keys, t1: float, max_steps: int, chunk_size: int, solver):
    """Final models, steps, rejected steps and outcomes for every key.

    Uses :func:`gflow_jax.ensemble.run_ensemble` if available, else a plain
    ``jax.jit(jax.vmap(gradient_flow))`` (lockstep).
    """
    try:
        from gflow_jax.ensemble import run_ensemble
    except ImportError:
        run_ensemble = None
    if run_ensemble is not None:
        ens = run_ensemble(
            init,
            risk,
            keys,
            t1,
            chunk_size=chunk_size,
            max_steps=max_steps,
            n_save=8,
            solver=solver,
            progress=False,
        )
        return (
            ens.models,
            ens.num_steps,
            ens.num_rejected,
            ens.outcome,
            ens.final_risk,
            ens.t_stop,
        )
    from gflow_jax.flow import gradient_flow

    @eqx.filter_jit
    def solve(keys):
        return eqx.filter_vmap(
            lambda k: gradient_flow(
                init(k), risk, t1, solver=solver, max_steps=max_steps, n_save=8, throw=False
            )
        )(keys)

    traj = solve(keys)
    return (
        traj.model,
        traj.num_steps,
        traj.num_rejected,
        traj.outcome,
        traj.final_risk,
        traj.t_stop,
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
) -> dict:
    """Run the three flows; return a JSON-serialisable record."""
    target = Affine(2.0, 1.0)
    exact = PopulationRisk.uniform_1d(target, 0.0, 1.0)
    risks = {"exact population": exact}
    for m in data_sizes:
        risks[f"empirical, {m} points"] = EmpiricalRisk(*sample_data(target, m))
    init = make_init(width)
    keys = jax.random.split(jax.random.key(seed), n)
    population_risk = eqx.filter_jit(eqx.filter_vmap(exact))
    timer = CompileTimer()
    rows = []
    for name, risk in risks.items():
        compile_before = timer.total
        start = time.perf_counter()
        models, steps, rejected, outcome, final_risk, t_stop = run_flows(
            init, risk, keys, t1, max_steps, chunk_size, SOLVERS[solver]()
        )
        jax.block_until_ready(steps)
        wall = time.perf_counter() - start
        compile_s = timer.total - compile_before
        steps, rejected = np.asarray(steps), np.asarray(rejected)
        outcome = np.asarray(outcome)
        exact_final = np.asarray(population_risk(models))
        rows.append(
            {
                "risk": name,
                "wall_s": wall,
                "compile_s": compile_s,
                "steps_median": float(np.median(steps)),
                "steps_p90": float(np.percentile(steps, 90)),
                "steps_max": int(steps.max()),
                "steps_total": int(steps.sum()),
                "rejected_fraction": float(rejected.sum() / max(steps.sum(), 1)),
                "hit_max_steps": int(np.sum(steps >= max_steps)),
                "t_stop_median": float(np.median(np.asarray(t_stop))),
                "us_per_member_step": 1e6 * (wall - compile_s) / max(int(steps.sum()), 1),
                "outcomes": {o.name: int(np.sum(outcome == int(o))) for o in Outcome},
                "final_risk_median": float(np.median(np.asarray(final_risk))),
                "final_population_risk_median": float(np.median(exact_final)),
            }
        )
        print(f"  {name}: {wall:.1f} s", flush=True)
    return {
        "workload": {
            "model": f"ShallowReLU(d_in=1, width={width}), N(0,1) init, v / sqrt({width})",
            "target": "2x + 1 on [0, 1]",
            "flow": f"gradient_flow to t1={t1:g}, {SOLVERS[solver].__name__} + default PID "
            "(float64)",
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
        "hit max_steps | median t_stop | converged | median final L (own) | "
        "median final L (population) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['risk']} | {r['wall_s']:.1f} | {r['compile_s']:.1f} | "
            f"{r['us_per_member_step']:.0f} | "
            f"{r['steps_median']:.0f} | {r['steps_p90']:.0f} | {r['steps_max']} | "
            f"{100 * r['rejected_fraction']:.0f} % | {r['hit_max_steps']} | "
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
    )
    table = markdown(record)
    record["markdown"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"population_vs_empirical_n{args.n}_t{args.t1:g}_{args.solver}.json"
    path.write_text(json.dumps(record, indent=2))
    print(table)
    print(f"\nwritten: {path}")
    return table


if __name__ == "__main__":
    main()
