"""gflow_jax against what researchers use today, on one workload, in one run.

Workload P (shared by every peer): ShallowReLU, d_in = 1, width ``--width`` (16), N(0, 1)
initialisation with output weights scaled by 1/sqrt(width) (as in
``ensemble_throughput``), the exact population risk of the target 2x + 1 with inputs
uniform on [0, 1] (``gf.PopulationRisk.uniform_1d``; every peer calls this same JAX
function, jitted, for L and ∇L), float64, gradient flow dθ/dt = −∇L(θ) from t = 0 to
t1 = ``--t1`` (100), ``--n`` (32) initialisations from ``jax.random.split(key(0), n)``,
rtol ``--rtol`` (1e-6), atol ``--atol`` (1e-9), no stop rule (every peer integrates to
t1). Reference: Tsit5 with rtol 1e-11, atol 1e-14 (vmapped ``diffeqsolve``).

Peers:

- ``diffrax loop``: a Python loop of one jitted ``diffrax.diffeqsolve`` (Tsit5 +
  PIDController) per trajectory;
- ``diffrax vmap``: ``jax.jit(jax.vmap(diffeqsolve))``, one lockstep loop;
- ``scipy RK45`` / ``scipy LSODA`` / ``scipy BDF``: ``scipy.integrate.solve_ivp`` per
  trajectory, the field (and for LSODA/BDF the exact Hessian as ``jac``) a jitted JAX
  function called from NumPy;
- ``optax GD``: vmapped ``optax.sgd`` (one lockstep ``while_loop``) at the largest
  learning rate of the grid ``--lrs`` whose iterates never increase any member's risk,
  each member run until its risk is ≤ its reference final risk × (1 + 1e-3) (its risk
  column then says how far below the reference its last step landed; "f evals" are
  its iterations);
- ``gflow run_ensemble``: ``gf.run_ensemble`` with the same controller, ``limits=None``,
  the default pool and segments, ``tail="auto"`` (the default: the exponential tail once
  stiff) and ``tail="explicit"`` (Tsit5 throughout). Its stop rules stay on: a member
  may stop before t1 once converged (L ≤ 1e-10).

Columns: trajectories/s and wall time (compilation excluded), compile time (first call
minus a second, warm call), vector-field evaluations per trajectory (scipy: its
``nfev``; Diffrax Tsit5: 6 per step + 1 (FSAL); gflow: 7 per step, the stop rule's
gradient included, + one per save time), accepted/rejected steps per trajectory, and
the final risk's largest relative deviation from the reference (a fast but wrong peer is
visible there), and the peak resident memory the warm run adds to the process
(:class:`PeakMemory`: sampled every 2 ms; memory held before the run, such as compiled
programs, is not counted).

    python -m benchmarks.peers --n 32 --t1 100
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

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import gflow_jax as gf  # noqa: E402
from gflow_jax.models.base import partition  # noqa: E402

RISK = gf.PopulationRisk.uniform_1d(gf.Affine(2.0, 1.0), 0.0, 1.0)
SCHEMA = ("peer", "wall_s", "compile_s", "traj_per_s", "vf_evals_per_traj",
          "accepted_per_traj", "rejected_per_traj", "max_rel_risk_error",
          "peak_memory_mib")  # fmt: skip


def make_init(width: int):
    def init(key):
        model = gf.ShallowReLU(1, width, key=key)
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    return init


def flat_problem(init, keys):
    """θ₀ of every member as rows, and jitted L(θ), −∇L(θ), −∇²L(θ) on flat θ."""
    models = eqx.filter_vmap(init)(keys)
    params, static = partition(models)
    first = jax.tree.map(lambda x: x[0], params)
    _, unravel = ravel_pytree(first)
    y0 = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    static0 = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, static)
    loss = lambda y: RISK(eqx.combine(unravel(y), static0))
    field = lambda y: -jax.grad(loss)(y)
    return np.asarray(y0), jax.jit(loss), jax.jit(field), jax.jit(lambda y: -jax.hessian(loss)(y))


def _resident_bytes() -> int:
    """The process's resident memory now (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak resident memory a block adds to the process, in MiB.

    A thread samples the resident set every `interval` seconds; ``mib`` is the largest
    sample minus the one before the block (buffers the process already held, such as
    compiled programs, are not counted; a peak shorter than `interval` may be missed).
    """

    def __init__(self, interval: float = 0.002):
        self.interval, self.mib = interval, 0.0

    def __enter__(self):
        import threading

        self._base = self._peak = _resident_bytes()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, _resident_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _resident_bytes())
        self.mib = (self._peak - self._base) / 2**20
        return False


def _timed(fn):
    """(compile_s, wall_s, out, peak_mib): a first (compiling) call and a second, warm one
    (timed, with the resident memory it adds: :class:`PeakMemory`)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    with PeakMemory() as mem:
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        wall = time.perf_counter() - t
    return max(first - wall, 0.0), wall, out, mem.mib


def diffrax_solve(loss, field, t1, rtol, atol):
    term = diffrax.ODETerm(lambda t, y, args: field(y))

    def solve(y0):
        sol = diffrax.diffeqsolve(
            term, diffrax.Tsit5(), 0.0, t1, None, y0,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            saveat=diffrax.SaveAt(t1=True), max_steps=2**20, throw=False,
        )  # fmt: skip
        s = sol.stats
        return loss(sol.ys[0]), s["num_accepted_steps"], s["num_rejected_steps"]

    return solve


def row(peer, wall, compile_s, peak_mib, n, risks, ref, evals, acc, rej, **extra):
    """One table row; the risk error is over the members whose `ref` is finite (NaN: the
    reference did not reach t1)."""
    risks, ref = np.asarray(risks, float), np.asarray(ref, float)
    ok = np.isfinite(ref)
    err = np.abs(risks[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-300)
    return dict(
        peer=peer,
        wall_s=wall,
        compile_s=compile_s,
        traj_per_s=n / wall,
        vf_evals_per_traj=float(np.mean(evals)),
        accepted_per_traj=float(np.mean(acc)),
        rejected_per_traj=float(np.mean(rej)),
        max_rel_risk_error=float(np.max(err)) if err.size else float("nan"),
        peak_memory_mib=peak_mib,
        final_risks=risks.tolist(),
        **extra,
    )


def run(args) -> dict:
    init = make_init(args.width)
    keys = jax.random.split(jax.random.key(0), args.n)
    y0, loss, field, neg_hess = flat_problem(init, keys)
    n, t1 = args.n, args.t1

    ref_solve = jax.jit(jax.vmap(diffrax_solve(loss, field, t1, 1e-11, 1e-14)))
    ref = np.asarray(ref_solve(y0)[0])
    rows = []

    # diffrax: a loop of jitted single solves, and one vmapped lockstep solve
    single = jax.jit(diffrax_solve(loss, field, t1, args.rtol, args.atol))
    compile_s = _timed(lambda: single(y0[0]))[0]
    with PeakMemory() as mem:
        t = time.perf_counter()
        outs = [jax.block_until_ready(single(y)) for y in y0]
        wall = time.perf_counter() - t
    risk, acc, rej = (np.asarray([o[i] for o in outs]) for i in range(3))
    rows.append(row("diffrax loop", wall, compile_s, mem.mib, n, risk, ref,
                    6 * (acc + rej) + 1, acc, rej))  # fmt: skip
    vsolve = jax.jit(jax.vmap(diffrax_solve(loss, field, t1, args.rtol, args.atol)))
    compile_s, wall, (risk, acc, rej), peak = _timed(lambda: vsolve(y0))
    acc, rej = np.asarray(acc), np.asarray(rej)
    lock = int(np.max(acc + rej))
    rows.append(row("diffrax vmap", wall, compile_s, peak, n, risk, ref,
                    np.full(n, 6 * lock + 1), acc, rej, lockstep_steps=lock))  # fmt: skip

    # scipy.integrate.solve_ivp per trajectory (JAX-jitted field and Hessian)
    from scipy.integrate import solve_ivp

    fun = lambda t, y: np.asarray(field(y))
    jac = lambda t, y: np.asarray(neg_hess(y))
    fun(0.0, y0[0]), jac(0.0, y0[0])  # compile outside the timing
    for method in args.scipy:
        with PeakMemory() as mem:
            t = time.perf_counter()
            sols = [
                solve_ivp(
                    fun,
                    (0.0, t1),
                    y,
                    method=method,
                    rtol=args.rtol,
                    atol=args.atol,
                    jac=None if method == "RK45" else jac,
                )  # fmt: skip
                for y in y0
            ]
            wall = time.perf_counter() - t
        risk = [float(loss(s.y[:, -1])) for s in sols]
        evals = np.asarray([s.nfev for s in sols])
        steps = np.asarray([len(s.t) - 1 for s in sols])
        njev = float(np.mean([s.njev for s in sols]))
        rows.append(row(f"scipy {method}", wall, 0.0, mem.mib, n, risk, ref, evals, steps,
                        np.full(n, np.nan), njev=njev))  # fmt: skip

    # optax GD, vmapped: the largest learning rate of the grid whose iterates never
    # increase any member's risk and reach each member's reference final risk
    def gd(lr, k_max):
        opt = optax.sgd(lr)

        def one(y, target):
            def cond(c):
                return (c[3] < k_max) & (loss(c[0]) > target)

            def body(c):
                y, state, up, k = c
                value, g = jax.value_and_grad(loss)(y)
                upd, state = opt.update(g, state, y)
                y2 = optax.apply_updates(y, upd)
                return y2, state, up | (loss(y2) > value), k + 1

            y, _, up, k = jax.lax.while_loop(cond, body, (y, opt.init(y), False, 0))
            return loss(y), up, k

        return jax.jit(jax.vmap(one))

    lr_used = None
    target = ref * (1 + args.gd_rtol)
    for lr in args.lrs:
        k_max = int(math.ceil(args.gd_horizon * t1 / lr))
        solve = gd(lr, k_max)
        compile_s, wall, (risk, up, k), peak = _timed(lambda solve=solve: solve(y0, target))
        k = np.asarray(k)
        if not np.any(np.asarray(up)) and np.all(k < k_max):
            lr_used = lr
            rows.append(row("optax GD", wall, compile_s, peak, n, risk, ref, k, k, np.zeros(n),
                            learning_rate=lr, lockstep_steps=int(k.max())))  # fmt: skip
            break

    # gflow_jax
    for tail in args.gflow:
        label = f"gflow run_ensemble (tail {tail})"
        pid = diffrax.PIDController(rtol=args.rtol, atol=args.atol)
        flow = gf.GradientFlow(controller=pid, tail=tail)
        go = lambda flow=flow: gf.run_ensemble(
            init, RISK, keys, t1, flow, limits=None, progress=False, n_save=args.n_save
        )
        compile_s, wall, ens, peak = _timed(go)
        steps = np.asarray(ens.num_steps)
        rej = np.asarray(ens.num_rejected)
        rows.append(row(label, wall, compile_s, peak, n, ens.final_risk, ref,
                        7 * steps + args.n_save, steps - rej, rej,
                        waste=ens.stats["waste"]))  # fmt: skip
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "n": n,
        "width": args.width,
        "t1": t1,
        "rtol": args.rtol,
        "atol": args.atol,
        "gd_learning_rate": lr_used,
        "reference_risks": ref.tolist(),
    }
    return {"meta": meta, "rows": rows}


def engine_cost(args) -> dict:
    """Issue 14, item 1: the engine's cost per useful member-step against a plain lockstep
    ``jax.jit(jax.vmap(diffeqsolve))`` step at the same batch size, a pool of 1 against
    ``gf.integrate`` alone, and the engine's waste, in one run.

    Workload E: ShallowReLU width ``--width``, v scaled by 1/sqrt(width), the empirical
    risk of 2x + 1 on ``--cost-points`` (64) evenly spaced points of [0, 1], Tsit5 +
    PIDController(rtol, atol), float64, ``tail="explicit"``, ``limits=None``, 100 save
    times. Per-step costs: every member runs exactly ``--cost-steps`` steps (t1 = 1e3,
    the step budget ends every solve, so no member idles and the ratios compare a
    step with a step); a pool of B runs max(B, ``--cost-members``) members (refilled
    from the queue), the loop of ``integrate`` ``--cost-members`` members; each timing
    is the fastest of ``--repeats`` warm calls. Waste:
    the same flow to ``--waste-t1`` without a budget, at the default pool.
    """
    init = make_init(args.width)
    x, y = gf.sample_data(gf.Affine(2.0, 1.0), args.cost_points)
    risk = gf.EmpiricalRisk(x, y)
    steps = args.cost_steps
    pid = diffrax.PIDController(rtol=args.rtol, atol=args.atol)
    flow = gf.GradientFlow(controller=pid, tail="explicit", max_steps=steps)
    keys = jax.random.split(jax.random.key(1), max(args.pools + [args.cost_members]))
    models = eqx.filter_vmap(init)(keys)
    params, static = partition(models)
    y0 = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], params))
    static0 = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, static)
    field = lambda t, y, a: -jax.grad(lambda u: risk(eqx.combine(unravel(u), static0)))(y)

    def lockstep_solve(y):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 1e3, None, y,
            stepsize_controller=pid, saveat=diffrax.SaveAt(t1=True), max_steps=steps,
            throw=False,
        )  # fmt: skip
        return sol.stats["num_steps"]

    lockstep = jax.jit(jax.vmap(lockstep_solve))

    def fastest(fn):
        jax.block_until_ready(fn())  # compile / warm
        best, out = math.inf, None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = jax.block_until_ready(fn())
            best = min(best, time.perf_counter() - t)
        return best, out

    opts = dict(n_save=100, limits=None, progress=False)
    pools = []
    for B in args.pools:
        members = max(B, args.cost_members)
        wall, n = fastest(lambda B=B: lockstep(y0[:B]))
        vmap_us = 1e6 * wall / (B * int(np.max(np.asarray(n))))
        go = lambda B=B, m=members: gf.run_ensemble(
            init, risk, keys[:m], 1e3, flow, chunk_size=B, **opts
        )
        wall, ens = fastest(go)
        useful = ens.stats["useful_member_steps"]
        engine_us = 1e6 * wall / useful
        # the share of saving: the same run with 2 save times instead of 100
        few = lambda B=B, m=members: gf.run_ensemble(
            init, risk, keys[:m], 1e3, flow, chunk_size=B, **dict(opts, n_save=2)
        )
        few_us = 1e6 * fastest(few)[0] / useful
        pools.append(dict(pool=B, members=members, vmap_us_per_member_step=vmap_us,
                          engine_us_per_useful_member_step=engine_us,
                          ratio=engine_us / vmap_us, waste=ens.stats["waste"],
                          engine_us_2_saves=few_us, ratio_2_saves=few_us / vmap_us,
                          segments=ens.stats["segments"]))  # fmt: skip
        print(json.dumps(pools[-1]), flush=True)

    # gradient flow alone: a Python loop of gf.integrate over the pool-of-1 members
    members = args.cost_members

    def loop():
        return [
            gf.integrate(init(k), risk, 1e3, flow, n_save=100, limits=None, throw=False).num_steps
            for k in keys[:members]
        ]

    wall, n = fastest(loop)
    alone_us = 1e6 * wall / int(np.sum(np.asarray(n)))
    pool1 = next((p for p in pools if p["pool"] == 1), None)

    # waste: the real (heavy-tailed) workload to --waste-t1 at the default pool
    wflow = gf.GradientFlow(controller=pid, tail="explicit")
    wkeys = jax.random.split(jax.random.key(2), args.waste_n)
    wens = gf.run_ensemble(init, risk, wkeys, args.waste_t1, wflow, **opts)
    wsteps = np.asarray(wens.num_steps)
    return dict(
        steps=steps,
        pools=pools,
        integrate_us_per_step=alone_us,
        pool1_vs_integrate=None if pool1 is None else pool1["engine_us_per_useful_member_step"]
        / alone_us,
        waste=dict(n=args.waste_n, t1=args.waste_t1, pool=wens.stats["pool_size"],
                   engine_waste=wens.stats["waste"],
                   vmap_waste=float(len(wsteps) * wsteps.max() / wsteps.sum()),
                   steps_median=float(np.median(wsteps)), steps_max=int(wsteps.max())),
    )  # fmt: skip


def engine_markdown(cost) -> str:
    out = [
        f"Every member runs {cost['steps']} steps; µs per member-step (fastest of the repeats).",
        "",
        "| pool B | members | lockstep vmap µs / member-step | engine µs / useful member-step "
        "| engine / vmap | engine, 2 save times / vmap | waste | segments |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in cost["pools"]:
        out.append(
            f"| {p['pool']} | {p['members']} | {p['vmap_us_per_member_step']:.1f} "
            f"| {p['engine_us_per_useful_member_step']:.1f} | {p['ratio']:.2f} "
            f"| {p['ratio_2_saves']:.2f} | {p['waste']:.2f} | {p['segments']} |"
        )
    w = cost["waste"]
    worst = max(p["ratio"] for p in cost["pools"])
    yes = lambda ok: "reached" if ok else "**not reached**"
    out += [
        "",
        "| target | measured | verdict |",
        "|---|---:|---|",
        f"| engine / lockstep vmap ≤ 1.3 at every pool size | worst {worst:.2f} "
        f"| {yes(worst <= 1.3)} |",
    ]
    if cost["pool1_vs_integrate"] is not None:
        r = cost["pool1_vs_integrate"]
        out.append(
            f"| pool of 1 ≤ 1.2 × `integrate` alone ({cost['integrate_us_per_step']:.1f} "
            f"µs/step) | {r:.2f} | {yes(r <= 1.2)} |"
        )
    out.append(
        f"| waste ≤ 1.5 (n = {w['n']}, t1 = {w['t1']}, pool {w['pool']}; steps median "
        f"{w['steps_median']:.0f}, max {w['steps_max']}; lockstep vmap waste "
        f"{w['vmap_waste']:.1f}) | {w['engine_waste']:.2f} | {yes(w['engine_waste'] <= 1.5)} |"
    )
    return "\n".join(out)


def markdown(result) -> str:
    m = result["meta"]
    out = [
        f"Machine: {m['machine']} ({m['device']}); n = {m['n']}, width {m['width']}, "
        f"t1 = {m['t1']}, rtol {m['rtol']}, atol {m['atol']}.",
        "",
        "| peer | traj/s | wall [s] | compile [s] | f evals / traj | accepted / traj "
        "| rejected / traj | max rel. risk error | peak memory [MiB] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['peer']} | {r['traj_per_s']:.2f} | {r['wall_s']:.2f} | {r['compile_s']:.1f} "
            f"| {r['vf_evals_per_traj']:.0f} | {r['accepted_per_traj']:.0f} "
            f"| {r['rejected_per_traj']:.0f} | {r['max_rel_risk_error']:.1e} "
            f"| {r['peak_memory_mib']:.1f} |"
        )
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--t1", type=float, default=100.0)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-9)
    p.add_argument("--n-save", type=int, default=16)
    p.add_argument("--scipy", nargs="*", default=["RK45", "LSODA", "BDF"])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05, 0.02, 0.01])
    p.add_argument("--gd-rtol", type=float, default=1e-3, help="GD target: ref risk x (1 + this)")
    p.add_argument("--gd-horizon", type=float, default=20.0, help="GD gives up at this x t1")
    p.add_argument("--gflow", nargs="+", default=["auto", "explicit"], help="tail options")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--pools", type=int, nargs="*", default=[1, 16, 64, 256],
                   help="pool sizes of the engine-cost table (none: skip it)")  # fmt: skip
    p.add_argument("--cost-steps", type=int, default=512, help="steps per member (engine cost)")
    p.add_argument("--cost-points", type=int, default=64, help="data points (engine cost)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (engine cost)")
    p.add_argument("--cost-members", type=int, default=64,
                   help="members of a small pool's run (engine cost)")  # fmt: skip
    p.add_argument("--waste-t1", type=float, default=10.0, help="horizon of the waste run")
    p.add_argument("--waste-n", type=int, default=256, help="members of the waste run")
    p.add_argument("--only-engine", action="store_true", help="only the engine-cost table")
    args = p.parse_args(argv)
    result = {"meta": {}, "rows": []} if args.only_engine else run(args)
    result["meta"].update(device=str(jax.devices()[0].device_kind), jax=jax.__version__,
                          machine=f"{platform.machine()} {os.cpu_count()} cores")  # fmt: skip
    if args.pools:
        result["engine_cost"] = engine_cost(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "peers.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    table = "" if args.only_engine else markdown(result)
    if args.pools:
        table += "\n\n" + engine_markdown(result["engine_cost"])
    with open(os.path.join(args.out, "peers.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
