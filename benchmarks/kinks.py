"""Empirical ReLU risk: kink-aware flow (PiecewiseGradientFlow) vs plain flow vs GD (issue 13).

Workload: ``ShallowReLU`` with ``d_in = 1``, width 16, ``N(0, 1)`` initialisation with
``v`` scaled by ``1/sqrt(16)``, the empirical risk of the target ``2x + 1`` on 64 evenly
spaced points of ``[0, 1]`` (mean squared error), float64, gradient flow to ``t = 1000``
(``--t1``), rtol ``1e-6``, atol ``1e-9``, ``--n`` initialisations from
``jax.random.split(key(0), n)``, all through ``gf.run_ensemble`` (``limits=None``).

Rows, in one run:

- ``piecewise``: ``gf.PiecewiseGradientFlow`` (Tsit5 with the activation pattern
  frozen, crossings located on the dense output, Filippov sliding), with its default
  exponential stiff-tail phase (``tail="auto"``); the members that switch to it, when,
  and its steps are reported;
- ``piecewise_explicit``: the same with ``tail="explicit"`` (Tsit5 throughout;
  ``--skip-explicit`` skips it);
- ``plain``: ``gf.GradientFlow`` (the default: Tsit5 + PID, exponential stiff tail),
  with a step budget ``--plain-max-steps`` per member (members that spend it are counted;
  their step counts are then lower bounds);
- ``GD``: vmapped gradient descent ``θ ← θ − η∇L`` (one jitted ``lax.fori_loop`` per
  chunk of 500 iterations) at the largest *stable* learning rate of ``--lrs``: every
  member's risk stays finite and below its initial risk at every chunk end (no
  divergence); members whose risk rose from one chunk end to the next (GD zig-zags
  across a sliding surface, where a fixed step cannot follow the kink) are counted, not
  disqualifying. Run until its median risk is ≤ the piecewise flow's median final risk
  (or ``t1/η`` iterations).

Reports steps per member (median / p99 / max and max/median), the rejected fraction,
wall time (compilation excluded: each piecewise row is run twice and the second run is
timed, since the engine compiles a pool shape of a phase when a pool of it first forms;
the plain row is compiled first by a call with the same shapes and ``t1 = 1e-3``, so
its wall time includes the compilation of its tail phase and of shrunken pools), the
outcomes and the fractions of members by final risk
(``< 1e-8``, ``[1e-8, 1e-3)``, ``≥ 1e-3``) of every row, and the largest relative
deviation of the final risks from a tight reference (``PiecewiseGradientFlow`` at rtol
``1e-10`` with ``tail="explicit"``, a vmapped ``integrate``, whose ``KinkStats`` give
the crossings and the members that slide) on the members that never slid, and on those
of them that ran to ``t1`` in the row and the reference (no stop rule met). GD's chunk
program is compiled by a one-chunk call with the same shapes, so its wall time excludes
compilation too. Writes JSON to ``--out`` (default ``benchmarks/out/kinks.json``) and the
Markdown (also printed, last) next to it (``kinks.md``): a ``Machine:`` line, a table
with one row per method run (and the reference's median final risk and outcomes), and a
table of the issue's targets (max/median steps ≤ 3; wall ≤ 2× GD; final risk = reference
to 1e-6 relative on the members that never slid and ran to ``t1``) for each piecewise
row, with the measured value and whether it is reached.

Cost: the reference (a lockstep vmap of Tsit5 at rtol 1e-10) and the first, compiling
run of each piecewise row dominate. ``--skip-explicit`` and ``--skip-plain`` skip the two
expensive rows (the explicit row took 14–24× the tail row's time); ``--warmup short``
compiles each piecewise row by a run to ``t = 1e-3`` instead of the whole run (its wall
time then includes the compilation of the tail phase and of shrunken pools: an upper
bound); ``--t1`` shortens every row and the reference; ``--skip-reference`` skips the
reference (no deviations, crossings or sliding counts: for large ``--n``, where it would
take ~2 s per member). The ``make bench`` size
(``benchmarks/run_all.py``) is ``--n 64 --skip-explicit --skip-plain``.

    python -m benchmarks.kinks --n 256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax as gf  # noqa: E402
from gflow_jax.models.base import partition  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
WIDTH = 16


def init(key):
    """``ShallowReLU(1, 16)``, every entry ``N(0, 1)``, then ``v ← v / 4``."""
    model = gf.ShallowReLU(1, WIDTH, key=key)
    return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(WIDTH))


def workload_risk() -> gf.EmpiricalRisk:
    x = jnp.linspace(0.0, 1.0, 64)[:, None]
    return gf.EmpiricalRisk(x, 2 * x + 1)


def _warm(run, warmup):
    """Compile with `warmup` (same shapes, tiny ``t1``); time `run` (compilation excluded)."""
    warmup()
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def _steps(ens) -> dict:
    steps = np.asarray(ens.num_steps)
    rejected = np.asarray(ens.num_rejected)
    med = float(np.median(steps))
    return {
        "median": med,
        "p99": float(np.percentile(steps, 99)),
        "max": int(steps.max()),
        "max_over_median": float(steps.max() / med),
        "rejected_fraction": float(rejected.sum() / steps.sum()),
    }


def _outcomes(codes) -> dict:
    names, counts = np.unique(gf.outcomes.outcome_names(codes), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts, strict=True)}


def _risk_bands(risks) -> dict:
    """Fractions of members by final risk: ``< 1e-8``, ``[1e-8, 1e-3)``, ``≥ 1e-3``."""
    r = np.asarray(risks)
    return {"<1e-8": float(np.mean(r < 1e-8)),
            "[1e-8,1e-3)": float(np.mean((r >= 1e-8) & (r < 1e-3))),
            ">=1e-3": float(np.mean(r >= 1e-3))}  # fmt: skip


@eqx.filter_jit
def _gd_chunk(params, static, risk, lr: float, chunk: int):
    """`chunk` GD iterations of every member (vmapped), and the members' risks after them."""

    def loss(p, s):
        return risk(eqx.combine(p, s))

    def one(p, s):
        def body(_, p):
            g = jax.grad(loss)(p, s)
            return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)

        p = jax.lax.fori_loop(0, chunk, body, p)
        return p, loss(p, s)

    return jax.vmap(one)(params, static)


@eqx.filter_jit
def _gd_risks(params, static, risk):
    return jax.vmap(lambda p, s: risk(eqx.combine(p, s)))(params, static)


def gd_run(risk, keys, lr: float, t1: float, goal: float, chunk: int = 500):
    """Vmapped GD in chunks until the median risk is ≤ `goal` (or t1/lr iterations).

    The chunk program is compiled once per (number of members, `lr`, `chunk`): a call
    with the same `keys` shape and ``t1 = lr`` (one chunk) compiles what a timed call runs.
    """
    models = eqx.filter_vmap(init)(keys)
    params, static = partition(models)
    budget = int(math.ceil(t1 / lr))
    initial = previous = _gd_risks(params, static, risk)
    iterations, stable = 0, True
    rising = jnp.zeros(initial.shape, bool)
    while iterations < budget:
        params, risks = _gd_chunk(params, static, risk, lr, chunk)
        risks.block_until_ready()
        iterations += chunk
        if not bool(jnp.all(jnp.isfinite(risks) & (risks <= initial))):
            stable = False
            break
        rising = rising | (risks > previous * (1 + 1e-12))
        previous = risks
        if float(jnp.median(risks)) <= goal:
            break
    return {"iterations": iterations, "budget_iterations": budget, "goal": goal,
            "median_risk": float(jnp.median(previous)), "stable": stable,
            "members_rising": int(rising.sum()),
            "risk_bands": _risk_bands(previous)}  # fmt: skip


#: the targets of issue 13, checked on every piecewise row: (key, text, threshold)
TARGETS = (
    ("max_over_median", "max/median steps ≤ 3", 3.0),
    ("wall_over_gd", "wall ≤ 2× GD reaching the same median risk", 2.0),
    (
        "risk_rel_dev_no_sliding_to_t1_max",
        "final risk = reference to 1e-6 relative (members that never slid and ran to t1)",
        1e-6,
    ),
)

LABELS = {
    "piecewise": "`PiecewiseGradientFlow`, tail",
    "piecewise_explicit": '`PiecewiseGradientFlow`, `tail="explicit"`',
    "plain": "plain `GradientFlow`",
}


def targets(rows: dict) -> list[dict]:
    """The targets on every piecewise row: the measured value and whether it is reached.

    A target whose value was not measured (no GD row; no member that never slid and ran
    to ``t1``) has ``value`` and ``reached`` ``None``.
    """
    out = []
    for key, text, threshold in TARGETS:
        for name in ("piecewise", "piecewise_explicit"):
            if name in rows:
                value = rows[name].get(key)
                reached = None if value is None else bool(value <= threshold)
                out.append({"target": text, "method": name, "key": key,
                            "threshold": threshold, "value": value,
                            "reached": reached})  # fmt: skip
    return out


def _fmt_outcomes(outcomes: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items()))


def _fmt(x, spec: str, none: str = "—") -> str:
    return none if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """The run's Markdown: a ``Machine:`` line, the rows table and the targets table."""
    m, rows = result["meta"], result["rows"]
    reference = (
        f'reference `PiecewiseGradientFlow` rtol {m["ref_rtol"]:g}, `tail="explicit"` '
        f"({rows['reference']['wall_s_with_compilation']:.1f} s with compilation)"
        if "reference" in rows
        else "no reference run (`--skip-reference`)"
    )
    lines = [
        f"Machine: {m['machine']}, {m['devices']} JAX device(s) ({m['device_kind']}); "
        f"n = {m['n']}, t1 = {m['t1']:g}, rtol {m['rtol']:g}, atol {m['atol']:g}; "
        f"{reference}; "
        + (
            "wall times exclude compilation (piecewise rows run twice, the second timed)"
            if m["warmup"] == "full"
            else "piecewise wall times include part of the compilation (short warm-up)"
        )
        + "; max rel. dev.: final risk against the reference's on the members that never "
        "slid and ran to t1 (no stop rule met) in the row and the reference.",
        "",
        "| method | steps median / p99 / max | max/median | rejected | wall (s) | wall ÷ GD "
        "| median final risk | max rel. dev. (members) | outcomes |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name in ("piecewise", "piecewise_explicit", "plain"):
        if name not in rows:
            continue
        r = rows[name]
        label = LABELS[name]
        outcomes = _fmt_outcomes(r["outcomes"])
        if name == "plain":
            label += f", cap {m['plain_max_steps']}"
            outcomes += f" ({r['capped_members']} at the cap)"
        dev = r.get("risk_rel_dev_no_sliding_to_t1_max")
        dev = "—" if dev is None else f"{dev:.1e} ({r['members_no_sliding_to_t1']})"
        lines.append(
            f"| {label} | {r['median']:.0f} / {r['p99']:.0f} / {r['max']} | "
            f"{r['max_over_median']:.2f} | {r['rejected_fraction']:.2%} | {r['wall_s']:.2f} | "
            f"{_fmt(r.get('wall_over_gd'), '.1f')} | {r['median_final_risk']:.4e} | "
            f"{dev} | {outcomes} |"
        )
    if "GD" in rows:
        g = rows["GD"]
        lines.append(
            f"| GD, η = {g['learning_rate']:g} ({g['members_rising']} members non-monotone) | "
            f"{g['iterations']} / {g['iterations']} / "
            f"{g['iterations']} | 1.00 | — | {g['wall_s']:.2f} | 1.0 | {g['median_risk']:.4e} "
            "| — | — |"
        )
    if "reference" in rows:
        ref = rows["reference"]
        lines.append(
            f"| reference (rtol {m['ref_rtol']:g}) | | | | | | {ref['median_final_risk']:.4e} "
            f"| | {_fmt_outcomes(ref['outcomes'])} |"
        )
    lines += ["", "| target | method | measured | verdict |", "|---|---|---:|---|"]
    for t in result["targets"]:
        r = rows[t["method"]]
        if t["value"] is None:
            measured, verdict = "—", "not measured"
        else:
            verdict = "reached" if t["reached"] else "not reached"
            if t["key"] == "wall_over_gd":
                measured = f"{t['value']:.1f}×"
            elif t["key"] == "max_over_median":
                measured = f"{t['value']:.2f}"
            else:
                measured = f"{t['value']:.1e} ({r['members_no_sliding_to_t1']} members)"
        lines.append(f"| {t['target']} | {LABELS[t['method']]} | {measured} | {verdict} |")
    return "\n".join(lines)


def _deviations(row: dict, ens, ref, slid, t1: float) -> None:
    """The final-risk deviations of `ens` from the reference, into `row`."""
    ref_risk = np.asarray(ref.final_risk)
    rel = np.abs(np.asarray(ens.final_risk) - ref_risk) / np.maximum(np.abs(ref_risk), 1e-300)
    row["risk_rel_dev_no_sliding_max"] = float(rel[~slid].max()) if (~slid).any() else None
    row["risk_rel_dev_no_sliding_median"] = float(np.median(rel[~slid])) if (~slid).any() else None
    row["risk_rel_dev_sliding_max"] = float(rel[slid].max()) if slid.any() else None
    # members that neither slid nor met a stop rule (row and reference ran to t1): the
    # final risk of a stopped member is the risk at the end of the step that met the
    # rule, so it measures the step length there, not the accuracy of the path
    full = ~slid & (np.asarray(ens.t_stop) == t1) & (np.asarray(ref.t_stop) == t1)
    row["members_no_sliding_to_t1"] = int(full.sum())
    row["risk_rel_dev_no_sliding_to_t1_max"] = float(rel[full].max()) if full.any() else None
    row["risk_rel_dev_no_sliding_to_t1_median"] = (
        float(np.median(rel[full])) if full.any() else None
    )
    row["risk_rel_dev_per_member"] = rel.tolist()


def _per_member(row: dict, ens) -> None:
    """Outcomes, risk bands and the per-member columns of `ens`, into `row`."""
    row["final_risk_per_member"] = np.asarray(ens.final_risk).tolist()
    row["t_stop_per_member"] = np.asarray(ens.t_stop).tolist()
    row["steps_per_member"] = np.asarray(ens.num_steps).tolist()
    row["tail_steps_per_member"] = np.asarray(ens.num_tail_steps).tolist()
    row["outcomes"] = _outcomes(ens.outcome)
    row["risk_bands"] = _risk_bands(ens.final_risk)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--t1", type=float, default=1000.0)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-9)
    p.add_argument("--plain-max-steps", type=int, default=2**15)
    p.add_argument("--lrs", type=float, nargs="+", default=[0.2, 0.1, 0.07, 0.05])
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--skip-explicit", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--out", type=Path, default=OUT / "kinks.json")
    p.add_argument("--ref-rtol", type=float, default=1e-10)
    p.add_argument(
        "--warmup",
        choices=["full", "short"],
        default="full",
        help="full (default): each piecewise row is run twice and the second run timed "
        "(compilation excluded); short: compiled by a run to t1 = 1e-3 like the plain row "
        "(the timed run then includes the compilation of the tail phase and of shrunken "
        "pools, so its wall time is an upper bound)",
    )
    args = p.parse_args(argv)

    risk = workload_risk()
    keys = jax.random.split(jax.random.key(0), args.n)
    common = dict(n_save=8, limits=None, progress=False)
    rows = {}

    flows = {}
    for name, tail in (("piecewise", "auto"), ("piecewise_explicit", "explicit")):
        if tail == "explicit" and args.skip_explicit:
            continue
        pw = gf.PiecewiseGradientFlow(rtol=args.rtol, atol=args.atol, tail=tail)

        def run(pw=pw, t1=args.t1):
            return gf.run_ensemble(init, risk, keys, t1, pw, **common)

        # full warm-up: the whole run (it compiles every pool shape of both phases, which
        # a short run does not reach), then the timed run
        start = time.perf_counter()
        ens, wall = _warm(run, run if args.warmup == "full" else partial(run, t1=1e-3))
        rows[name] = {"wall_s": wall, "wall_s_with_warmup": time.perf_counter() - start,
                      **_steps(ens),
                      "median_final_risk": float(np.median(ens.final_risk))}  # fmt: skip
        if tail == "auto":
            t_tail = np.asarray(ens.t_tail)
            tail_steps = np.asarray(ens.num_tail_steps)
            switched = np.isfinite(t_tail)
            rows[name].update(
                tail_members=int(switched.sum()),
                t_tail_median=float(np.median(t_tail[switched])) if switched.any() else None,
                tail_steps_median=float(np.median(tail_steps)),
                tail_steps_max=int(tail_steps.max()),
                explicit_steps_median=float(np.median(np.asarray(ens.num_steps) - tail_steps)),
                explicit_steps_max=int(np.max(np.asarray(ens.num_steps) - tail_steps)),
            )
        flows[name] = ens
        print(name, rows[name], flush=True)
    piecewise = flows["piecewise"]

    # the tight reference (a vmapped integrate, which keeps the KinkStats column that the
    # Ensemble lacks): crossings and sliding per member are taken from it
    from gflow_jax.dynamics.integrate import _integrate, make_problem

    def vmapped(dyn):
        params, static = partition(eqx.filter_vmap(init)(keys))
        dyn, problem = make_problem(dyn, jnp.float64, risk, static, args.t1, 8, None, False)

        @eqx.filter_jit
        def run(params):
            return jax.vmap(lambda p: _integrate(dyn, problem, p, None))(params)

        return run(params)

    ref = slid = None
    if not args.skip_reference:
        start = time.perf_counter()
        ref = vmapped(
            gf.PiecewiseGradientFlow(rtol=args.ref_rtol, atol=args.ref_rtol * 1e-3, tail="explicit")
        )
        ref_wall = time.perf_counter() - start
        stats = ref.kinks
        slid = np.asarray(stats.num_slides) > 0
        rows["piecewise"].update(
            crossings_median_ref=float(np.median(stats.num_crossings)),
            crossings_max_ref=int(np.max(stats.num_crossings)),
            sliding_members_ref=int(slid.sum()),
            sliding_at_stop_ref=int(np.sum(np.asarray(stats.num_sliding) > 0)),
        )
        if "tail_members" in rows["piecewise"]:
            switched = np.isfinite(np.asarray(piecewise.t_tail))
            rows["piecewise"].update(
                tail_members_sliding_ref=int(np.sum(switched & slid)),
                never_tail_sliding_ref=int(np.sum(~switched & slid)),
            )
        print("kinks (reference)", rows["piecewise"], flush=True)
    goal = rows["piecewise"]["median_final_risk"]
    for lr in sorted(args.lrs, reverse=True):
        gd_run(risk, keys, lr, lr, goal)  # compile: one chunk, the same shapes
        start = time.perf_counter()
        out = gd_run(risk, keys, lr, args.t1, goal)
        wall = time.perf_counter() - start
        if out["stable"]:
            rows["GD"] = {"learning_rate": lr, "wall_s": wall, **out}
            print("GD", rows["GD"], flush=True)
            break

    for name, ens in flows.items():
        _per_member(rows[name], ens)
        if ref is not None:
            _deviations(rows[name], ens, ref, slid, args.t1)
    if ref is not None:
        ref_risk = np.asarray(ref.final_risk)
        rows["reference"] = {
            "wall_s_with_compilation": ref_wall,
            "outcomes": _outcomes(ref.outcome),
            "risk_bands": _risk_bands(ref.final_risk),
            "median_final_risk": float(np.median(ref.final_risk)),
            "final_risk_per_member": ref_risk.tolist(),
            "crossings_per_member": np.asarray(stats.num_crossings).tolist(),
            "slides_per_member": np.asarray(stats.num_slides).tolist(),
            "t_stop_per_member": np.asarray(ref.t_stop).tolist(),
        }
        print("reference", rows["reference"], flush=True)

    if not args.skip_plain:
        plain = gf.GradientFlow(
            controller=diffrax.PIDController(rtol=args.rtol, atol=args.atol),
            max_steps=args.plain_max_steps,
        )
        ens, wall = _warm(
            lambda: gf.run_ensemble(init, risk, keys, args.t1, plain, **common),
            lambda: gf.run_ensemble(init, risk, keys, 1e-3, plain, **common),
        )
        capped = np.asarray(ens.num_steps) >= args.plain_max_steps
        rows["plain"] = {"wall_s": wall, **_steps(ens), "capped_members": int(capped.sum()),
                         "median_final_risk": float(np.median(ens.final_risk))}  # fmt: skip
        _per_member(rows["plain"], ens)
        if ref is not None:
            rel_plain = np.abs(np.asarray(ens.final_risk) - ref_risk) / np.maximum(
                np.abs(ref_risk), 1e-300
            )
            ok = ~slid & ~capped
            rows["plain"]["risk_rel_dev_no_sliding_uncapped_max"] = (
                float(rel_plain[ok].max()) if ok.any() else None
            )
            _deviations(rows["plain"], ens, ref, slid, args.t1)
        print("plain", {k: v for k, v in rows["plain"].items() if "per_member" not in k})
    for name in ("piecewise", "piecewise_explicit", "plain"):
        if name in rows and "GD" in rows:
            rows[name]["wall_over_gd"] = rows[name]["wall_s"] / rows["GD"]["wall_s"]

    device = jax.devices()[0]
    result = {
        "workload": "ShallowReLU(1, 16), N(0,1) init, v/4; EmpiricalRisk 2x+1 on 64 points of "
        f"[0, 1]; t1 = {args.t1}; rtol {args.rtol}, atol {args.atol}; n = {args.n}",
        "machine": platform.processor() or platform.machine(),
        "meta": {
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "devices": len(jax.devices()),
            "device_kind": str(device.device_kind),
            "jax": jax.__version__,
            "n": args.n,
            "t1": args.t1,
            "rtol": args.rtol,
            "atol": args.atol,
            "ref_rtol": args.ref_rtol,
            "warmup": args.warmup,
            "plain_max_steps": args.plain_max_steps,
        },  # fmt: skip
        "rows": rows,
    }
    result["targets"] = targets(rows)
    table = markdown(result)
    result["markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(table + "\n")
    summary = {
        name: {k: v for k, v in row.items() if not isinstance(v, list)}
        for name, row in rows.items()
    }
    print(json.dumps(summary, indent=2))
    print()
    print(table, flush=True)
    return result


if __name__ == "__main__":
    main()
