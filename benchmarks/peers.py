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
visible there).

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
          "accepted_per_traj", "rejected_per_traj", "max_rel_risk_error")  # fmt: skip


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


def _timed(fn):
    """(compile_s, wall_s, out): a first (compiling) call and a second, warm one."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    wall = time.perf_counter() - t
    return max(first - wall, 0.0), wall, out


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


def row(peer, wall, compile_s, n, risks, ref, evals, acc, rej, **extra):
    risks = np.asarray(risks, float)
    err = np.abs(risks - ref) / np.maximum(np.abs(ref), 1e-300)
    return dict(
        peer=peer,
        wall_s=wall,
        compile_s=compile_s,
        traj_per_s=n / wall,
        vf_evals_per_traj=float(np.mean(evals)),
        accepted_per_traj=float(np.mean(acc)),
        rejected_per_traj=float(np.mean(rej)),
        max_rel_risk_error=float(np.max(err)),
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
    compile_s, _, _ = _timed(lambda: single(y0[0]))
    t = time.perf_counter()
    outs = [jax.block_until_ready(single(y)) for y in y0]
    wall = time.perf_counter() - t
    risk, acc, rej = (np.asarray([o[i] for o in outs]) for i in range(3))
    rows.append(row("diffrax loop", wall, compile_s, n, risk, ref, 6 * (acc + rej) + 1, acc, rej))
    vsolve = jax.jit(jax.vmap(diffrax_solve(loss, field, t1, args.rtol, args.atol)))
    compile_s, wall, (risk, acc, rej) = _timed(lambda: vsolve(y0))
    acc, rej = np.asarray(acc), np.asarray(rej)
    lock = int(np.max(acc + rej))
    rows.append(row("diffrax vmap", wall, compile_s, n, risk, ref, np.full(n, 6 * lock + 1),
                    acc, rej, lockstep_steps=lock))  # fmt: skip

    # scipy.integrate.solve_ivp per trajectory (JAX-jitted field and Hessian)
    from scipy.integrate import solve_ivp

    fun = lambda t, y: np.asarray(field(y))
    jac = lambda t, y: np.asarray(neg_hess(y))
    fun(0.0, y0[0]), jac(0.0, y0[0])  # compile outside the timing
    for method in args.scipy:
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
        rows.append(row(f"scipy {method}", wall, 0.0, n, risk, ref, evals, steps,
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
        compile_s, wall, (risk, up, k) = _timed(lambda solve=solve: solve(y0, target))
        k = np.asarray(k)
        if not np.any(np.asarray(up)) and np.all(k < k_max):
            lr_used = lr
            rows.append(row("optax GD", wall, compile_s, n, risk, ref, k, k, np.zeros(n),
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
        t = time.perf_counter()
        go()
        first = time.perf_counter() - t
        t = time.perf_counter()
        ens = go()
        wall = time.perf_counter() - t
        steps = np.asarray(ens.num_steps)
        rej = np.asarray(ens.num_rejected)
        rows.append(row(label, wall, max(first - wall, 0.0), n, ens.final_risk, ref,
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


def markdown(result) -> str:
    m = result["meta"]
    out = [
        f"Machine: {m['machine']} ({m['device']}); n = {m['n']}, width {m['width']}, "
        f"t1 = {m['t1']}, rtol {m['rtol']}, atol {m['atol']}.",
        "",
        "| peer | traj/s | wall [s] | compile [s] | f evals / traj | accepted / traj "
        "| rejected / traj | max rel. risk error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['peer']} | {r['traj_per_s']:.2f} | {r['wall_s']:.2f} | {r['compile_s']:.1f} "
            f"| {r['vf_evals_per_traj']:.0f} | {r['accepted_per_traj']:.0f} "
            f"| {r['rejected_per_traj']:.0f} | {r['max_rel_risk_error']:.1e} |"
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
    args = p.parse_args(argv)
    result = run(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "peers.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    table = markdown(result)
    with open(os.path.join(args.out, "peers.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
