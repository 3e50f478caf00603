"""gflow_jax against the PyTorch ODE solvers (issue 14): torchdiffeq and torchode.

Workload T (shared by every peer): ``gf.ShallowReLU(1, 16)`` (width ``--width``), N(0, 1)
initialisation with the output weights ``v`` scaled by 1/sqrt(width), the *empirical*
squared risk ``L(θ) = (1/64) Σ_i (N_θ(x_i) − (2 x_i + 1))²`` on ``--points`` (64) evenly
spaced points ``x_i`` of [0, 1] (endpoints included; ``gf.sample_data(gf.Affine(2, 1),
64)``), float64, gradient flow dθ/dt = −∇L(θ) from t = 0 to t1 = ``--t1`` (10), ``--n``
(32) initialisations ``gf.ShallowReLU(1, 16, key=k)`` for k in
``jax.random.split(jax.random.key(0), n)``, converted field by field to torch tensors, so
every peer starts from the same θ0 (the torch and JAX risks at θ0 are compared and the
largest difference is reported as ``initial_risk_max_abs_diff``), rtol ``--rtol``
(1e-6), atol ``--atol`` (1e-9).

The torch field is native torch: the forward pass ``c + Σ_j v_j relu(w_j x + b_j)`` in
torch on a batch of flat θ ``(B, 3·width + 1)``, ``∇L`` by ``torch.autograd.grad`` of
the summed member risks (the members are independent, so this is every member's own
gradient); torch's ``relu'(0) = 0`` is gflow_jax's convention too. Torch runs on the CPU
with ``--torch-threads`` (1) intra-op threads: on these tiny ``(B, 64, 16)`` tensors more
threads only add synchronisation (on 2 shared cores, 2 threads made one batched field
evaluation 10–20× slower than 1).

Peers:

- ``torchdiffeq loop``: ``torchdiffeq.odeint(method="dopri5")`` once per trajectory (a
  Python loop), ``y`` of shape ``(49,)``;
- ``torchdiffeq stacked``: one ``odeint`` on the stacked batch ``(n, 49)``: one shared
  step size for every member, chosen by the RMS error norm over the whole batch (so a
  member's own error may exceed the tolerance while the batch norm does not), and every
  member takes as many steps as the batch needs;
- ``torchode``: ``torchode.Dopri5`` + ``IntegralController`` in ``AutoDiffAdjoint``,
  batched with per-sample step sizes and per-sample error norms (no ``torch.compile``);
- ``gflow run_ensemble``: ``gf.run_ensemble(init, gf.EmpiricalRisk(x, y), keys, t1,
  gf.GradientFlow(controller=diffrax.PIDController(rtol, atol), solver=diffrax.Tsit5(),
  tail="explicit"), limits=None, n_save=2)``: Tsit5 throughout, the default pool; its
  stop rules stay on (a member may stop before t1 once converged or critical, where its
  risk no longer changes at this precision);
- ``reference``: a loop of one jitted ``diffrax.diffeqsolve`` per member, Tsit5 with
  rtol 1e-11, atol 1e-14 on the same field (``jax.grad`` of the same ``EmpiricalRisk``),
  at most ``--ref-max-steps`` (100 000) steps. A member whose flow slides along a kink
  (a neuron's switching point held at a data point: the field is discontinuous there)
  chatters at such a tolerance and spends the budget; it is left out of the risk-error
  column (``reference_reached_t1`` in the JSON, the count in the ``Machine:`` line).

Columns: trajectories/s and wall time of a warm call, first-call overhead (first call
minus a second call: of one trajectory for the torch peers and the reference, which
compile nothing per batch, and of the whole run for gflow, its compilation), vector-field
evaluations per trajectory (torchdiffeq: counted calls of the field, initial step
selection included — for the stacked batch each call evaluates every member; torchode:
its ``n_f_evals``;
gflow: 7 per step, the stop rule's gradient included, + one per save time; reference:
6 per step + 1), accepted and rejected steps per trajectory (torchdiffeq: counted by
its ``callback_accept_step``/``callback_reject_step``; torchode: ``n_accepted`` and
``n_steps − n_accepted``), and the largest relative deviation of the final risk
``L(θ(t1))`` from the reference's over the members.

    python -m benchmarks.torch_peers --n 32 --t1 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchdiffeq  # noqa: E402
import torchode  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import gflow_jax as gf  # noqa: E402
from benchmarks.peers import PeakMemory, _timed, make_init, row  # noqa: E402
from gflow_jax.models.base import partition  # noqa: E402

SCHEMA = ("peer", "wall_s", "compile_s", "traj_per_s", "vf_evals_per_traj",
          "accepted_per_traj", "rejected_per_traj", "max_rel_risk_error",
          "peak_memory_mib", "final_risks")  # fmt: skip
REF_RTOL, REF_ATOL = 1e-11, 1e-14


# ---------------------------------------------------------------- the torch field


class TorchField:
    """``−∇L`` on flat θ = (w, b, v, c), natively in torch; counts its calls and steps.

    Accepts ``(P,)`` or ``(B, P)``; torchdiffeq calls ``callback_accept_step`` /
    ``callback_reject_step`` after each step attempt.
    """

    def __init__(self, x, y, width):
        self.x = torch.tensor(np.array(x).reshape(-1), dtype=torch.float64)
        self.y = torch.tensor(np.array(y).reshape(-1), dtype=torch.float64)
        self.width = width
        self.reset()

    def reset(self):
        self.calls = self.accepted = self.rejected = 0

    def risk(self, theta):
        """Every member's L(θ): ``(B,)`` for ``(B, P)``."""
        h = self.width
        w, b, v, c = theta[:, :h], theta[:, h : 2 * h], theta[:, 2 * h : 3 * h], theta[:, 3 * h]
        pre = self.x[None, :, None] * w[:, None, :] + b[:, None, :]  # (B, N, H)
        out = torch.einsum("bnh,bh->bn", torch.relu(pre), v) + c[:, None]
        return torch.mean((out - self.y[None, :]) ** 2, dim=1)

    def grad_field(self, theta):
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.risk(th).sum(), th)
        return -g

    def __call__(self, t, theta):
        self.calls += 1
        if theta.ndim == 1:
            return self.grad_field(theta[None])[0]
        return self.grad_field(theta)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def torch_theta0(models, width) -> torch.Tensor:
    """The members' θ0 as rows ``(n, 3·width + 1)`` in the layout (w, b, v, c)."""
    n = models.w.shape[0]
    parts = [
        np.asarray(models.w).reshape(n, width),
        np.asarray(models.b).reshape(n, width),
        np.asarray(models.v).reshape(n, width),
        np.asarray(models.c).reshape(n, 1),
    ]
    return torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float64)


# ---------------------------------------------------------------- rows


def run(args) -> dict:
    n, t1, width = args.n, args.t1, args.width
    torch.set_num_threads(args.torch_threads)
    init = make_init(width)
    keys = jax.random.split(jax.random.key(0), n)
    x, y = gf.sample_data(gf.Affine(2.0, 1.0), args.points)
    risk = gf.EmpiricalRisk(x, y)

    # JAX: flat θ0, L and −∇L (ravel_pytree order), and the reference
    models = eqx.filter_vmap(init)(keys)
    params, static = partition(models)
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], params))
    static0 = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, static)
    y0_jax = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    loss = lambda u: risk(eqx.combine(unravel(u), static0))
    term = diffrax.ODETerm(lambda t, u, a: -jax.grad(loss)(u))

    @jax.jit
    def ref_solve(u0):
        sol = diffrax.diffeqsolve(
            term, diffrax.Tsit5(), 0.0, t1, None, u0,
            stepsize_controller=diffrax.PIDController(rtol=REF_RTOL, atol=REF_ATOL),
            saveat=diffrax.SaveAt(t1=True), max_steps=args.ref_max_steps, throw=False,
        )  # fmt: skip
        s = sol.stats
        done = sol.result == diffrax.RESULTS.successful
        return loss(sol.ys[0]), s["num_accepted_steps"], s["num_rejected_steps"], done

    # one jitted solve per member (a member sliding along a kink would hold a lockstep
    # vmap to its step budget); a member that spends --ref-max-steps is left out
    overhead = _timed(lambda: ref_solve(y0_jax[0]))[0]
    with PeakMemory() as mem:
        t = time.perf_counter()
        outs = [jax.block_until_ready(ref_solve(u)) for u in y0_jax]
        wall = time.perf_counter() - t
    ref, acc, rej, done = (np.asarray([o[i] for o in outs]) for i in range(4))
    ref_all = ref.astype(float)
    ref = np.where(done, ref_all, np.nan)
    rows = []
    ref_row = row(f"reference (diffrax Tsit5 loop, rtol {REF_RTOL:g}, atol {REF_ATOL:g})",
                  wall, overhead, mem.mib, n, ref_all, ref, 6 * (acc + rej) + 1,
                  acc, rej, reached_t1=done.tolist())  # fmt: skip
    print(f"reference: {int(done.sum())}/{n} members reached t1 within "
          f"{args.ref_max_steps} steps ({wall:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip

    # torch: the same θ0, the same risk
    field = TorchField(x, y, width)
    theta0 = torch_theta0(models, width)
    l0_torch = field.risk(theta0).numpy()
    l0_jax = np.asarray(jax.vmap(loss)(y0_jax))
    t_span = torch.tensor([0.0, t1], dtype=torch.float64)
    tol = dict(rtol=args.rtol, atol=args.atol)

    def final_risk(theta):
        with torch.no_grad():
            return field.risk(theta.reshape(-1, theta0.shape[1])).numpy()

    # (a) torchdiffeq per trajectory
    def one(th):
        field.reset()
        out = torchdiffeq.odeint(field, th, t_span, method="dopri5", **tol)[-1]
        return out, field.calls, field.accepted, field.rejected

    # torch compiles nothing: its first-call overhead is measured on one trajectory (a
    # first and a second call), the batched peers then run once, warm
    overhead = _timed(lambda: one(theta0[0]))[0]
    with PeakMemory() as mem:
        t = time.perf_counter()
        outs = [one(th) for th in theta0]
        wall = time.perf_counter() - t
    risk_a = final_risk(torch.stack([o[0] for o in outs]))
    ev, acc, rej = (np.asarray([o[i] for o in outs]) for i in (1, 2, 3))
    rows.append(row("torchdiffeq dopri5, loop", wall, overhead, mem.mib, n, risk_a, ref, ev, acc,
                    rej))  # fmt: skip
    print(f"torchdiffeq loop: {wall:.1f} s", file=sys.stderr, flush=True)

    # (b) torchdiffeq on the stacked batch: one shared step
    with PeakMemory() as mem:
        t = time.perf_counter()
        out, ev, acc, rej = one(theta0)
        wall = time.perf_counter() - t
    rows.append(row("torchdiffeq dopri5, stacked batch (shared step)", wall,
                    overhead, mem.mib, n, final_risk(out), ref, np.full(n, ev),
                    np.full(n, acc), np.full(n, rej), shared_steps=acc + rej))  # fmt: skip

    # (c) torchode: per-sample steps, batched
    tterm = torchode.ODETerm(lambda t, u: field.grad_field(u))
    solver = torchode.AutoDiffAdjoint(
        torchode.Dopri5(term=tterm),
        torchode.IntegralController(term=tterm, **tol),
        max_steps=2**20,
    )
    print(f"torchdiffeq stacked: {wall:.1f} s", file=sys.stderr, flush=True)
    ivp = lambda th: torchode.InitialValueProblem(
        y0=th, t_eval=t_span.expand(th.shape[0], 2).contiguous()
    )
    overhead = _timed(lambda: solver.solve(ivp(theta0[:1])))[0]
    with PeakMemory() as mem:
        t = time.perf_counter()
        sol = solver.solve(ivp(theta0))
        wall = time.perf_counter() - t
    st = sol.stats
    n_steps, n_acc = st["n_steps"].numpy(), st["n_accepted"].numpy()
    rows.append(row("torchode Dopri5 (per-sample steps)", wall, overhead, mem.mib, n,
                    final_risk(sol.ys[:, -1]), ref, st["n_f_evals"].numpy(), n_acc,
                    n_steps - n_acc, status=sol.status.tolist()))  # fmt: skip

    # (d) gflow_jax
    flow = gf.GradientFlow(
        controller=diffrax.PIDController(rtol=args.rtol, atol=args.atol),
        solver=diffrax.Tsit5(),
        tail="explicit",
    )
    go = lambda: gf.run_ensemble(init, risk, keys, t1, flow, limits=None, n_save=2,
                                 progress=False)  # fmt: skip
    compile_s, wall, ens, peak = _timed(go)
    steps, rej = np.asarray(ens.num_steps), np.asarray(ens.num_rejected)
    rows.append(row("gflow run_ensemble (Tsit5, tail explicit)", wall,
                    compile_s, peak, n, ens.final_risk, ref, 7 * steps + 2,
                    steps - rej, rej, waste=ens.stats["waste"]))  # fmt: skip
    rows.append(ref_row)

    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torchdiffeq": torchdiffeq.__version__,
        "torchode": getattr(torchode, "__version__", "unknown"),
        "n": n,
        "width": width,
        "points": args.points,
        "t1": t1,
        "rtol": args.rtol,
        "atol": args.atol,
        "initial_risk_max_abs_diff": float(np.max(np.abs(l0_torch - l0_jax))),
        "reference_risks": ref_all.tolist(),
        "reference_reached_t1": done.tolist(),
        "ref_max_steps": args.ref_max_steps,
    }
    return {"meta": meta, "rows": rows}


def _fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(result) -> str:
    m = result["meta"]
    out = [
        f"Machine: {m['machine']} (torch {m['torch']} CPU, {m['torch_threads']} threads; "
        f"jax {m['jax']} on {m['device']}); n = {m['n']}, width {m['width']}, "
        f"{m['points']} points, t1 = {m['t1']}, rtol {m['rtol']}, atol {m['atol']}; "
        f"the reference reached t1 for {sum(m['reference_reached_t1'])}/{m['n']} members "
        f"within {m['ref_max_steps']} steps (risk errors over those).",
        "",
        "| peer | traj/s | wall [s] | first-call overhead [s] | f evals / traj "
        "| accepted / traj | rejected / traj | max rel. risk error | peak memory [MiB] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['peer']} | {_fmt(r['traj_per_s'], '.1f')} | {_fmt(r['wall_s'], '.3f')} "
            f"| {_fmt(r['compile_s'], '.2f')} | {_fmt(r['vf_evals_per_traj'], '.0f')} "
            f"| {_fmt(r['accepted_per_traj'], '.1f')} | {_fmt(r['rejected_per_traj'], '.1f')} "
            f"| {_fmt(r['max_rel_risk_error'], '.1e')} | {_fmt(r['peak_memory_mib'], '.1f')} |"
        )
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--t1", type=float, default=10.0)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--points", type=int, default=64)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-9)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--ref-max-steps", type=int, default=100_000)
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args(argv)
    result = run(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "torch_peers.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (out / "torch_peers.md").write_text(md + "\n")
    print(md)
    return result


if __name__ == "__main__":
    main()
