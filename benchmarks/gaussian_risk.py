"""Exact Gaussian teacher–student risk: cost, and against quasi-Monte Carlo.

Workload (``PopulationRisk.gaussian``): a ``ShallowReLU`` student of width ``n`` with
biases learns a teacher ``ShallowReLU`` of width ``k = n`` (both ``N(0, 1/d)`` input
weights, ``N(0, 1)`` biases, output weights ``1/n``) under ``x ~ N(0, I_d)``, float64.

1. **Cost of one risk-and-gradient evaluation** (``jax.jit(jax.value_and_grad)``, the
   call a gradient-flow step makes; median of repeated calls after compilation) vs the
   width ``n = k`` at fixed ``d`` and vs the dimension ``d`` at fixed width.
2. **Against QMC**: the quadrature risk ``PopulationRisk(risk.target, Gaussian(0, I,
   rule="sobol"), nodes=N)`` at ``N = 2^10 … 2^max``: its relative errors in ``L`` and
   ``∇L`` (exact risk as the reference) and its cost, so the table shows the QMC size
   needed for a given accuracy and what it costs relative to the exact risk.
3. Optionally (``--ensemble B``, default 0 = off) a teacher–student ensemble of ``B``
   gradient flows (``run_ensemble``, limits off) with the exact risk and with a QMC
   risk of ``--ensemble-nodes`` nodes (default 2^14): wall time, solver steps, and the
   *exact* final risk of both.

Writes JSON to ``benchmarks/out/`` and prints Markdown tables.

    python -m benchmarks.gaussian_risk                      # default, < 2 min on 2 cores
    python -m benchmarks.gaussian_risk --widths 4 16 64 256 --dims 4 16 64 256
    python -m benchmarks.gaussian_risk --ensemble 1024 --ensemble-width 4 --t1 100
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

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax as gf  # noqa: E402
from gflow_jax.models.base import partition  # noqa: E402
from gflow_jax.risks.gaussian import orthonormal_teacher  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def make_net(d: int, n: int, key) -> gf.ShallowReLU:
    """``ShallowReLU(d, n)``: ``w ~ N(0, 1/d)``, ``b ~ N(0, 1)``, ``v = N(0, 1)/n``, ``c = 0``."""
    kw, kb, kv = jax.random.split(key, 3)
    model = gf.ShallowReLU(d, n, key=key)
    return eqx.tree_at(
        lambda m: (m.w, m.b, m.v, m.c),
        model,
        (
            jax.random.normal(kw, (n, d)) / math.sqrt(d),
            jax.random.normal(kb, (n,)),
            jax.random.normal(kv, (1, n)) / n,
            jnp.zeros(1),
        ),
    )


def _value_and_grad(risk, model):
    params, static = partition(model)
    fn = jax.jit(jax.value_and_grad(lambda p, r: r(eqx.combine(p, static))))
    return fn, params


def _time_calls(fn, *args, repeats: int) -> tuple[float, float]:
    """``(compile_s, median_s)``: first call (compilation), then the median of repeats."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times))


def cost_row(d: int, n: int, seed: int, repeats: int) -> dict:
    teacher = make_net(d, n, jax.random.key(seed))
    student = make_net(d, n, jax.random.key(seed + 1))
    risk = gf.PopulationRisk.gaussian(teacher)
    fn, params = _value_and_grad(risk, student)
    compile_s, call_s = _time_calls(fn, params, risk, repeats=repeats)
    return {"d": d, "n": n, "k": n, "compile_s": compile_s, "call_us": 1e6 * call_s}


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def qmc_rows(d: int, n: int, seed: int, max_log2: int, repeats: int) -> list[dict]:
    teacher = make_net(d, n, jax.random.key(seed))
    student = make_net(d, n, jax.random.key(seed + 1))
    exact = gf.PopulationRisk.gaussian(teacher)
    fn, params = _value_and_grad(exact, student)
    compile_s, call_s = _time_calls(fn, params, exact, repeats=repeats)
    value, grad = fn(params, exact)
    value, grad = float(value), _flat(grad)
    rows = [
        {
            "rule": "exact",
            "nodes": 0,
            "risk_rel_err": 0.0,
            "grad_rel_err": 0.0,
            "compile_s": compile_s,
            "call_us": 1e6 * call_s,
        }
    ]
    measure = gf.Gaussian(np.zeros(d), np.eye(d), rule="sobol")
    for log2 in range(10, max_log2 + 1, 2):
        quad = gf.PopulationRisk(exact.target, measure, nodes=2**log2, key=seed)
        qfn, qparams = _value_and_grad(quad, student)
        q_compile, q_call = _time_calls(qfn, qparams, quad, repeats=repeats)
        q_value, q_grad = qfn(qparams, quad)
        rows.append(
            {
                "rule": "sobol",
                "nodes": 2**log2,
                "risk_rel_err": abs(float(q_value) - value) / value,
                "grad_rel_err": float(np.linalg.norm(_flat(q_grad) - grad) / np.linalg.norm(grad)),
                "compile_s": q_compile,
                "call_us": 1e6 * q_call,
            }
        )
    return rows


def ensemble_rows(batch: int, width: int, nodes: int, t1: float, seed: int) -> list[dict]:
    """A teacher–student ensemble with the exact and with a QMC risk (limits off)."""
    d = width
    teacher = orthonormal_teacher(d, width)
    exact = gf.PopulationRisk.gaussian(teacher)
    quad = gf.PopulationRisk(
        exact.target, gf.Gaussian(np.zeros(d), np.eye(d), rule="sobol"), nodes=nodes, key=seed
    )

    def init(key):
        return gf.ShallowReLU(d, width, key=key, use_bias=False, init="he")

    keys = jax.random.split(jax.random.key(seed), batch)
    exact_final = eqx.filter_jit(eqx.filter_vmap(exact))
    rows = []
    for name, risk in (("exact", exact), (f"sobol {nodes}", quad)):
        start = time.perf_counter()
        ens = gf.run_ensemble(init, risk, keys, t1, n_save=8, limits=None, progress=False)
        jax.block_until_ready(ens.num_steps)
        wall = time.perf_counter() - start
        steps = np.asarray(ens.num_steps)
        final = np.asarray(exact_final(ens.models))
        rows.append(
            {
                "risk": name,
                "wall_s": wall,
                "steps_median": float(np.median(steps)),
                "steps_p90": float(np.percentile(steps, 90)),
                "steps_max": int(steps.max()),
                "exact_final_risk_median": float(np.median(final)),
                "fraction_exact_final_below_1e-6": float(np.mean(final < 1e-6)),
            }
        )
        print(f"  ensemble {name}: {wall:.1f} s", flush=True)
    return rows


def benchmark(
    *,
    widths=(4, 16, 64, 256),
    dims=(4, 256),
    fixed_d: int = 16,
    fixed_n: int = 16,
    qmc_max_log2: int = 16,
    repeats: int = 20,
    ensemble: int = 0,
    ensemble_width: int = 4,
    ensemble_nodes: int = 2**14,
    t1: float = 100.0,
    seed: int = 0,
) -> dict:
    """Run the three parts; return a JSON-serialisable record."""
    by_width = [cost_row(fixed_d, n, seed, repeats) for n in widths]
    print("  cost vs width done", flush=True)
    by_dim = [cost_row(d, fixed_n, seed, repeats) for d in dims]
    print("  cost vs dimension done", flush=True)
    qmc = qmc_rows(fixed_d, fixed_n, seed, qmc_max_log2, repeats)
    print("  QMC comparison done", flush=True)
    ens = ensemble_rows(ensemble, ensemble_width, ensemble_nodes, t1, seed) if ensemble else []
    return {
        "workload": {
            "student/teacher": "ShallowReLU, w ~ N(0, 1/d), b ~ N(0, 1), v ~ N(0, 1)/n, k = n",
            "input law": "N(0, I_d)",
            "timing": f"jit(value_and_grad), median of {repeats} calls after compilation",
            "fixed_d": fixed_d,
            "fixed_n": fixed_n,
            "ensemble": {"B": ensemble, "width": ensemble_width, "nodes": ensemble_nodes, "t1": t1},
            "seed": seed,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": jax.local_device_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "cost_by_width": by_width,
        "cost_by_dim": by_dim,
        "qmc": qmc,
        "ensemble": ens,
    }


def markdown(record: dict) -> str:
    """The Markdown tables of a :func:`benchmark` record."""
    w = record["workload"]
    lines = [
        f"Exact Gaussian teacher–student risk; {w['student/teacher']}; x ~ {w['input law']}; "
        f"{w['timing']}.",
        "",
        "| n = k | d | one value+grad [µs] | compile [s] |",
        "|---:|---:|---:|---:|",
    ]
    for r in record["cost_by_width"] + record["cost_by_dim"]:
        lines.append(f"| {r['n']} | {r['d']} | {r['call_us']:.0f} | {r['compile_s']:.1f} |")
    lines += [
        "",
        f"Against scrambled Sobol' QMC (n = k = {w['fixed_n']}, d = {w['fixed_d']}; errors "
        "relative to the exact risk):",
        "",
        "| rule | nodes | rel. error L | rel. error ∇L | one value+grad [µs] | × exact |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = record["qmc"][0]["call_us"]
    for r in record["qmc"]:
        lines.append(
            f"| {r['rule']} | {r['nodes'] or '—'} | {r['risk_rel_err']:.1e} | "
            f"{r['grad_rel_err']:.1e} | {r['call_us']:.0f} | {r['call_us'] / base:.1f} |"
        )
    if record["ensemble"]:
        e = w["ensemble"]
        lines += [
            "",
            f"Ensemble: B = {e['B']} flows, width {e['width']} = d = k (orthonormal teacher, "
            f"no biases, He init), t1 = {e['t1']:g}, limits off:",
            "",
            "| risk | wall [s] | steps median | p90 | max | median exact final L | "
            "exact final L < 1e-6 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in record["ensemble"]:
            lines.append(
                f"| {r['risk']} | {r['wall_s']:.1f} | {r['steps_median']:.0f} | "
                f"{r['steps_p90']:.0f} | {r['steps_max']} | {r['exact_final_risk_median']:.2e} | "
                f"{100 * r['fraction_exact_final_below_1e-6']:.0f} % |"
            )
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="*", default=[4, 16, 64, 256])
    parser.add_argument("--dims", type=int, nargs="*", default=[4, 256])
    parser.add_argument("--fixed-d", type=int, default=16, help="d of the width scan and QMC")
    parser.add_argument("--fixed-n", type=int, default=16, help="n = k of the d scan and QMC")
    parser.add_argument("--qmc-max-log2", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ensemble", type=int, default=0, help="B flows (0: skip)")
    parser.add_argument("--ensemble-width", type=int, default=4)
    parser.add_argument("--ensemble-nodes", type=int, default=2**14)
    parser.add_argument("--t1", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if min(args.widths + args.dims + [args.fixed_d, args.fixed_n, args.repeats]) < 1:
        parser.error("sizes and --repeats must be positive.")
    if not 10 <= args.qmc_max_log2 <= 22:
        parser.error("--qmc-max-log2 must be in [10, 22].")
    record = benchmark(
        widths=tuple(args.widths),
        dims=tuple(args.dims),
        fixed_d=args.fixed_d,
        fixed_n=args.fixed_n,
        qmc_max_log2=args.qmc_max_log2,
        repeats=args.repeats,
        ensemble=args.ensemble,
        ensemble_width=args.ensemble_width,
        ensemble_nodes=args.ensemble_nodes,
        t1=args.t1,
        seed=args.seed,
    )
    table = markdown(record)
    record["markdown"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gaussian_risk_ens{args.ensemble}.json"
    path.write_text(json.dumps(record, indent=2))
    print(table)
    print(f"\nwritten: {path}")
    return table


if __name__ == "__main__":
    main()
