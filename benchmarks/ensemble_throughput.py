"""Ensemble throughput: Python loop vs plain ``vmap`` vs the compacting engine.

Workload (PERFORMANCE.md's W): ShallowReLU, d_in = 1, width 16, affine target 2x + 1 on
[0, 1], N(0, 1) initialisation with output weights scaled by 1/sqrt(16), float64,
``gflow_jax.GradientFlow()`` with the library defaults (Tsit5 + PIDController(rtol=1e-7,
atol=1e-10), stiff-tail phase ``tail="auto"``; ``--tail explicit`` keeps Tsit5 throughout,
the workload of the tables in benchmarks/README.md), gradient flow to ``--t1``, limit
classification off (``limits=None``) in every variant: this measures the solves. Two
risks: (a) the exact population risk, (b) the empirical risk on 64 evenly spaced points.

For each ensemble size B and risk, measured in one run:

- ``loop``: a Python loop of jitted single solves (``gflow_jax.integrate``); its cost
  per solver step is measured on ``--loop-sample`` members and multiplied by all members'
  step counts (a small sample's trajectories/s would miss the heavy tail);
- ``vmap``: ``jax.jit(jax.vmap(integrate))`` — one lockstep while-loop that runs until the
  slowest member finishes. It is run in full when B ≤ ``--vmap-full``; otherwise its
  time is *estimated* as (measured cost of one lockstep step at batch B) × (the slowest
  member's step count, known from the engine's run of the same solves);
- ``engine``: ``gflow_jax.run_ensemble`` (segment-and-compact with refill).

Reported: trajectories/s, member-steps (useful = Σ steps of members; evaluated = batch ×
lockstep steps), ``waste`` = evaluated / useful, and the speed-up over the loop. Each
Tsit5 step costs 6 vector-field evaluations (FSAL) + 1 for the stop rule.
Compilation is excluded (every variant is warmed up first on the same shapes).

The answers, for the tests (not in the table): ``loop_risk_rel_dev`` and
``vmap_risk_rel_dev``, the largest relative deviation of the final risk from the
engine's, on the members the loop ran and on the ``vmap_risk_members`` members the
``vmap`` run finished (all of them when it ran in full; those the probe finished
otherwise; NaN for none).

    python -m benchmarks.ensemble_throughput --sizes 256 1024 4096 --t1 100 --max-steps 50000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax as gf  # noqa: E402

WIDTH = 16


def init(key):
    model = gf.ShallowReLU(1, WIDTH, key=key)
    return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(WIDTH))


def risks():
    target = gf.Affine(2.0, 1.0)
    x, y = gf.sample_data(target, 64)
    return {
        "exact population": gf.PopulationRisk.uniform_1d(target, 0.0, 1.0),
        "empirical (64 pts)": gf.EmpiricalRisk(x, y),
    }


def dynamics(args, max_steps: int) -> gf.GradientFlow:
    """The flow of every variant (library defaults but the tail option and the budget)."""
    return gf.GradientFlow(tail=args.tail, max_steps=max_steps)


def _vmapped_solver(risk, t1, flow, n_save):
    """``jax.jit(jax.vmap(integrate))``: every member in one lockstep loop."""

    @eqx.filter_jit
    def solve(keys):
        def one(key):
            return gf.integrate(init(key), risk, t1, flow, n_save=n_save, limits=None, throw=False)

        return jax.vmap(one)(keys)

    return solve


def _max_rel_dev(values, reference) -> float:
    """``max |values − reference| / |reference|`` (NaN when there is no member to compare)."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    if values.size == 0:
        return math.nan
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def bench_one(name, risk, B, args, key):
    keys = jax.random.split(key, B)
    row = {"risk": name, "B": B, "t1": args.t1}

    # engine (warm-up on the same shapes first: compilation excluded)
    flow = dynamics(args, args.max_steps)
    opts = dict(
        chunk_size=args.chunk,
        segment_steps=args.segment,
        n_save=args.n_save,
        limits=None,
        progress=False,
    )
    gf.run_ensemble(init, risk, keys[: 2 * args.chunk], args.t1, flow, **opts)  # compiles
    t = time.perf_counter()
    ens = gf.run_ensemble(init, risk, keys, args.t1, flow, **opts)
    engine_s = time.perf_counter() - t
    steps = np.asarray(ens.num_steps)
    row.update(
        engine_s=engine_s,
        engine_traj_per_s=B / engine_s,
        useful_member_steps=int(steps.sum()),
        engine_evaluated=ens.stats["evaluated_member_steps"],
        engine_waste=ens.stats["waste"],
        steps_median=float(np.median(steps)),
        steps_p90=float(np.percentile(steps, 90)),
        steps_max=int(steps.max()),
        rejected_fraction=float(np.sum(ens.num_rejected) / max(steps.sum(), 1)),
        tail_steps_fraction=float(np.sum(ens.num_tail_steps) / max(steps.sum(), 1)),
        converged=ens.fraction(gf.Outcome.CONVERGED).estimate,
        hit_max_steps=int(np.sum(steps >= args.max_steps)),
    )

    # loop of jitted single solves on a sample
    n_loop = min(args.loop_sample, B)
    single = dict(n_save=args.n_save, limits=None, throw=False)
    gf.integrate(init(keys[0]), risk, args.t1, flow, **single)
    loop_risks = []
    t = time.perf_counter()
    for i in range(n_loop):
        tr = gf.integrate(init(keys[i]), risk, args.t1, flow, **single)
        loop_risks.append(tr.final_risk.block_until_ready())
    loop_s = time.perf_counter() - t
    engine_risks = np.asarray(ens.final_risk)
    # Step counts are heavy-tailed, so a small sample's trajectories/s is biased; the
    # loop's cost per solver step is stable, and the loop would take all members' steps.
    us_per_step = 1e6 * loop_s / max(int(steps[:n_loop].sum()), 1)
    row.update(
        loop_sample=n_loop,
        loop_us_per_step=us_per_step,
        loop_traj_per_s=B / (1e-6 * us_per_step * int(steps.sum())),
        loop_risk_rel_dev=_max_rel_dev(loop_risks, engine_risks[:n_loop]),
    )

    # plain vmap: full run, or lockstep step cost x slowest member
    probe_steps = args.probe_steps
    probe = _vmapped_solver(risk, args.t1, dynamics(args, probe_steps), args.n_save)
    jax.block_until_ready(probe(keys))
    t = time.perf_counter()
    out = jax.block_until_ready(probe(keys))
    probe_s = time.perf_counter() - t
    lockstep = int(np.max(np.asarray(out.num_steps)))
    per_lockstep_step = probe_s / max(lockstep, 1)
    if B <= args.vmap_full:
        full = _vmapped_solver(risk, args.t1, flow, args.n_save)
        jax.block_until_ready(full(keys))
        t = time.perf_counter()
        out = jax.block_until_ready(full(keys))
        vmap_s = time.perf_counter() - t
        vmap_kind = "measured"
    else:
        vmap_s = per_lockstep_step * int(steps.max())
        vmap_kind = "estimated"
    # the answers of the last vmap run (full, or the probe) on the members it finished
    finished = np.asarray(out.verdict) != int(gf.SolverVerdict.MAX_STEPS)
    vmap_risks = np.asarray(out.final_risk)[finished]
    row.update(
        vmap_s=vmap_s,
        vmap_kind=vmap_kind,
        vmap_traj_per_s=B / vmap_s,
        vmap_waste=B * int(steps.max()) / max(int(steps.sum()), 1),
        vmap_us_per_lockstep_step=1e6 * per_lockstep_step,
        vmap_risk_members=int(finished.sum()),
        vmap_risk_rel_dev=_max_rel_dev(vmap_risks, engine_risks[finished]),
    )
    row["engine_vs_loop"] = row["engine_traj_per_s"] / row["loop_traj_per_s"]
    row["engine_vs_vmap"] = row["engine_traj_per_s"] / row["vmap_traj_per_s"]
    return row


def markdown(rows, meta) -> str:
    out = [
        f"Machine: {meta['machine']}, {meta['devices']} JAX device(s); t1 = {meta['t1']}, "
        f"pool {meta['chunk']}, segment {meta['segment']} steps, max_steps {meta['max_steps']}, "
        f"tail {meta.get('tail', 'explicit')}.",
        "",
        "| risk | B | steps median / p90 / max | rejected | loop traj/s | vmap traj/s "
        "| engine traj/s | engine / loop | engine / vmap | waste vmap | waste engine |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['risk']} | {r['B']} | {r['steps_median']:.0f} / {r['steps_p90']:.0f} / "
            f"{r['steps_max']} | {r['rejected_fraction']:.0%} | {r['loop_traj_per_s']:.2f} | "
            f"{r['vmap_traj_per_s']:.2f} ({r['vmap_kind']}) | {r['engine_traj_per_s']:.2f} | "
            f"{r['engine_vs_loop']:.1f}x | {r['engine_vs_vmap']:.1f}x | "
            f"{r['vmap_waste']:.1f}x | {r['engine_waste']:.2f}x |"
        )
    return "\n".join(out)


def refresh(path: str) -> str:
    """Recompute derived columns of a saved JSON run (e.g. after a fix) and its table."""
    with open(path) as fh:
        run = json.load(fh)
    for r in run["rows"]:
        r["loop_traj_per_s"] = r["B"] / (1e-6 * r["loop_us_per_step"] * r["useful_member_steps"])
        r["engine_vs_loop"] = r["engine_traj_per_s"] / r["loop_traj_per_s"]
        r["engine_vs_vmap"] = r["engine_traj_per_s"] / r["vmap_traj_per_s"]
    with open(path, "w") as fh:
        json.dump(run, fh, indent=1)
    return markdown(run["rows"], run["meta"])


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--t1", type=float, default=100.0)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--segment", type=int, default=128)
    p.add_argument("--n-save", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=50_000)
    p.add_argument("--loop-sample", type=int, default=32)
    p.add_argument("--probe-steps", type=int, default=300)
    p.add_argument("--vmap-full", type=int, default=256)
    p.add_argument("--risks", nargs="+", default=None, help="subset of risk names")
    p.add_argument(
        "--tail",
        choices=["auto", "explicit"],
        default="auto",
        help="GradientFlow(tail=...): stiff-tail phase (auto) or Tsit5 throughout",
    )
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args(argv)

    rows = []
    for name, risk in risks().items():
        if args.risks and not any(name.startswith(r) for r in args.risks):
            continue
        for B in args.sizes:
            row = bench_one(name, risk, B, args, jax.random.key(B))
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "devices": len(jax.devices()),
        "t1": args.t1,
        "chunk": args.chunk,
        "segment": args.segment,
        "max_steps": args.max_steps,
        "tail": args.tail,
        "jax": jax.__version__,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ensemble_throughput.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    table = markdown(rows, meta)
    with open(os.path.join(args.out, "ensemble_throughput.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
