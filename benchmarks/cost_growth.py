"""How the ensemble engine's cost grows, and how close its vector field runs to the machine.

Workload G (every row): gradient flow of an empirical squared risk
``L(θ) = (1/N) Σ_i (N_θ(x_i) − y_i)²`` with ``N`` evenly spaced points ``x_i`` on
[0, 1] and the target ``y = 2x + 1``, float64, ``gf.GradientFlow(tail="explicit")``
(Tsit5 + PIDController rtol 1e-6, atol 1e-9) from t = 0 towards ``--t1`` (10³) with a
budget of ``--steps`` (256) steps per member, so that (almost) every member takes the
same number of steps and the rows compare a step with a step; no limit classification
(``limits=None``), the default pool. Model: ``ShallowReLU(1, width)``
(output weights scaled by 1/sqrt(width)) or ``DeepMLP((1, 16, …, 16, 1), "tanh")``
for the depth rows. One variable changes per sweep, the others stay at their base
values B = 256, width = 16, N = 64, depth 1 (``--base``):

- **B** (members): 64 … 16 384 (``--batches``, comma-separated; likewise below);
- **width**: 4 … 1 024;
- **N** (data points): 16 … 4 096;
- **depth** (hidden layers of a tanh ``DeepMLP`` of width 16): 1, 2, 4, 8.

Per row: wall time and cost per useful member-step of a warm call (compilation
excluded: the first call minus the second is reported as compile time), useful
member-steps, vector-field evaluations (7 per Tsit5 step: 6 stages + the stop rule's
gradient), evaluations per second, and for
the B sweep the process's peak resident memory after the row (``ru_maxrss``; it only
grows, so the rows are run in increasing B) and the size of the engine's per-member
state. Per sweep the fitted exponent ``p`` of ``wall ∝ x^p`` (least squares in log–log
over the rows) is printed and plotted, and likewise for the cost per member-step
(the step counts change with the workload, e.g. kinks multiply them for small N).

**Roofline.** For the width sweep, the FLOPs of one batched vector-field evaluation
(``−∇L`` of the whole pool, from XLA's ``cost_analysis`` of the compiled function)
times the evaluations per second gives the FLOP/s the engine achieves inside the
field; the ``peak`` is the measured FLOP/s of a float64 matrix product (2048 × 2048,
best of 5) on the same machine. ``fraction = achieved / peak``.

    python -m benchmarks.cost_growth            # JSON + Markdown + PNG in benchmarks/out/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax as gf  # noqa: E402

EVALS_PER_STEP = 7  # Tsit5: 6 stages (FSAL) + the stop rule's gradient


def _init(width: int, depth: int):
    if depth == 1:

        def init(key):
            model = gf.ShallowReLU(1, width, key=key)
            return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    else:

        def init(key):
            return gf.DeepMLP((1, *([width] * depth), 1), "tanh", key=key)

    return init


def _risk(n_points: int):
    x = jnp.linspace(0.0, 1.0, n_points)[:, None]
    return gf.EmpiricalRisk(x, 2.0 * x + 1.0)


def _dynamics(steps: int = 256):
    """Tsit5 + PIDController(rtol 1e-6, atol 1e-9) throughout, `steps` steps at most."""
    import diffrax

    controller = diffrax.PIDController(rtol=1e-6, atol=1e-9)
    return gf.GradientFlow(controller=controller, tail="explicit", max_steps=steps)


def _state_bytes(init, risk) -> int:
    """Bytes of one member's engine state (the gradient-flow State pytree)."""
    from gflow_jax.dynamics.integrate import check_problem, make_problem

    params, static, dtype = check_problem(init(jax.random.key(0)), risk)
    dyn, problem = make_problem(_dynamics(), dtype, risk, static, 1.0, 100, None, False)
    state = jax.eval_shape(lambda p: dyn.init(problem, p), params)
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)))


def _field_flops(init, risk, batch: int) -> float:
    """XLA's FLOP count of one batched evaluation of ``−∇L`` over `batch` members."""
    models = eqx.filter_vmap(init)(jax.random.split(jax.random.key(0), batch))
    params, static = eqx.partition(models, eqx.is_inexact_array)

    def field(p):
        return jax.vmap(lambda q: jax.grad(lambda r: risk(eqx.combine(r, static)))(q))(p)

    cost = jax.jit(field).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", math.nan))


def _matmul_peak(n: int = 2048) -> float:
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float64)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def _row(batch: int, width: int, n_points: int, depth: int, t1: float, steps: int) -> dict:
    init, risk = _init(width, depth), _risk(n_points)
    keys = jax.random.split(jax.random.key(0), batch)

    def call():
        start = time.perf_counter()
        ens = gf.run_ensemble(init, risk, keys, t1, _dynamics(steps), limits=None, progress=False)
        return ens, time.perf_counter() - start

    _, first = call()
    ens, wall = call()
    steps = int(ens.stats["useful_member_steps"])
    evals = EVALS_PER_STEP * steps
    return {
        "B": batch,
        "width": width,
        "N": n_points,
        "depth": depth,
        "wall_s": wall,
        "compile_s": max(first - wall, 0.0),
        "member_steps": steps,
        "rejected": int(np.sum(ens.num_rejected)),
        "field_evals": evals,
        "evals_per_s": evals / wall,
        "us_per_member_step": 1e6 * wall / max(steps, 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_risk_median": float(np.median(ens.final_risk)),
    }


def _exponent(xs, ys) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def main(argv=None) -> dict:
    """Run the sweeps; write ``cost_growth.json``, ``.md`` and ``.png`` into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--t1", type=float, default=1e3)
    parser.add_argument("--steps", type=int, default=256, help="step budget per member")
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--batches", type=ints, default=[64, 256, 1024, 4096, 16384])
    parser.add_argument("--widths", type=ints, default=[4, 16, 64, 256, 1024])
    parser.add_argument("--points", type=ints, default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--depths", type=ints, default=[1, 2, 4, 8])
    parser.add_argument("--base", type=ints, default=[256, 16, 64, 1], help="B,width,N,depth")
    args = parser.parse_args(argv)

    base = dict(zip(("batch", "width", "n_points", "depth"), args.base, strict=True))
    grids = {
        "B": ("batch", args.batches),
        "width": ("width", args.widths),
        "N": ("n_points", args.points),
        "depth": ("depth", args.depths),
    }
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "t1": args.t1,
        "steps": args.steps,
        "sweeps": {},
    }
    for name, (key, values) in grids.items():
        rows = []
        for v in values:
            settings = {**base, key: v}
            row = _row(settings["batch"], settings["width"], settings["n_points"],
                       settings["depth"], args.t1, args.steps)  # fmt: skip
            if name == "B":
                init = _init(settings["width"], settings["depth"])
                row["state_bytes_per_member"] = _state_bytes(init, _risk(settings["n_points"]))
            rows.append(row)
            print(json.dumps({"sweep": name, **row}), flush=True)

        def fit(field, values=values, rows=rows):
            return _exponent(values, [r[field] for r in rows]) if len(rows) > 1 else math.nan

        result["sweeps"][name] = {
            "rows": rows,
            "wall_exponent": fit("wall_s"),
            "step_cost_exponent": fit("us_per_member_step"),
            "steps_exponent": fit("member_steps"),
        }

    peak = _matmul_peak()
    result["matmul_peak_flops"] = peak
    for row in result["sweeps"]["width"]["rows"]:
        init, risk = _init(row["width"], 1), _risk(row["N"])
        flops = _field_flops(init, risk, row["B"])
        row["field_flops_per_eval"] = flops / row["B"]
        row["achieved_flops"] = flops * row["evals_per_s"] / row["B"]
        row["roofline_fraction"] = row["achieved_flops"] / peak

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cost_growth.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    md = _markdown(result, grids)
    with open(os.path.join(args.out, "cost_growth.md"), "w") as fh:
        fh.write(md + "\n")
    _plot(result, grids, os.path.join(args.out, "cost_growth.png"))
    print(md)
    return result


def _markdown(result: dict, grids: dict) -> str:
    lines = [
        f"Machine: {result['machine']}, device {result['device']} ({result['backend']}); "
        f"t1 = {result['t1']:g}, {result['steps']} steps per member; float64 matmul peak "
        f"{result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s.",
        "",
        "| sweep | value | wall (s) | compile (s) | member-steps | µs/member-step | "
        "field evals/s | peak RSS (MiB) | state B/member | field FLOP/eval | roofline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (key, _values) in grids.items():
        col = {"batch": "B", "n_points": "N"}.get(key, key)
        for r in result["sweeps"][name]["rows"]:
            state = r.get("state_bytes_per_member")
            flops = r.get("field_flops_per_eval")
            frac = r.get("roofline_fraction")
            lines.append(
                f"| {name} | {r[col]} | {r['wall_s']:.2f} | {r['compile_s']:.1f} | "
                f"{r['member_steps']} | {r['us_per_member_step']:.1f} | "
                f"{r['evals_per_s']:.3g} | {r['peak_rss_mib']:.0f} | "
                f"{'' if state is None else state} | "
                f"{'' if flops is None else f'{flops:.3g}'} | "
                f"{'' if frac is None else f'{100 * frac:.2f} %'} |"
            )
    lines += [
        "",
        "| sweep | wall ∝ x^p | cost per member-step ∝ x^p | member-steps ∝ x^p |",
        "|---|---:|---:|---:|",
    ]
    for name in grids:
        s = result["sweeps"][name]
        lines.append(
            f"| {name} | {s['wall_exponent']:.2f} | {s['step_cost_exponent']:.2f} | "
            f"{s['steps_exponent']:.2f} |"
        )
    return "\n".join(lines)


def _plot(result: dict, grids: dict, path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, len(grids))
    for ax, (name, (_key, values)) in zip(axes, grids.items(), strict=True):
        s = result["sweeps"][name]
        walls = [r["wall_s"] for r in s["rows"]]
        cost = [r["us_per_member_step"] * 1e-6 for r in s["rows"]]
        ax.loglog(values, walls, "o-", label=f"wall (s), p = {s['wall_exponent']:.2f}")
        ax.loglog(
            values, cost, "s--", label=f"s per member-step, p = {s['step_cost_exponent']:.2f}"
        )
        ax.set_xlabel(name)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
