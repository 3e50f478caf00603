"""Cost of an implicit ReLU network's vector field, and fixed-point iterations vs γ‖A‖₂.

Workload: ``N`` unit-norm inputs in ``R^8`` with teacher labels
(:func:`gflow_jax.experiments.implicit_width.make_data`), loss ``½ Σ (N(x_i) − y_i)²``,
float64, one CPU thread pool as configured by XLA.

1. **Vector-field cost.** Wall time of one jitted ``value_and_grad`` of the risk (the
   gradient-flow vector field, best of ``repeats`` calls after compilation) for
   :class:`ImplicitReLU` (``init="spectral"``,
   ``γ = γ‖A(0)‖₂ = 0.5``, Picard forward + implicit (Neumann) backward) against the
   width-matched :class:`ShallowReLU` (same ``N``, ``m``, ``d_in``), for several
   ``(N, m)``; also the number of Picard steps.
2. **Iterations vs γ‖A‖₂.** For ``N = 32``, ``m = 64``: Picard and Newton iterations
   to the default tolerance (``1e-10``) against the prediction
   ``⌈log(1e-10)/log(γ‖A‖₂)⌉``, and the cost of ``value_and_grad``. The JSON also
   records ``picard_newton_max_diff``, the largest entry of ``|z_Picard − z_Newton|``
   (both solve the same fixed-point problem; for the tests, not in the table).

Writes JSON to ``implicit_cost.json`` in ``--out`` (default ``benchmarks/out/``) and
prints Markdown tables.

    python -m benchmarks.implicit_cost           # full
    python -m benchmarks.implicit_cost --quick   # fewer sizes and repeats
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

from gflow_jax.experiments.implicit_width import make_data  # noqa: E402
from gflow_jax.models.implicit import ImplicitReLU  # noqa: E402
from gflow_jax.models.shallow import ShallowReLU  # noqa: E402
from gflow_jax.risks.empirical import EmpiricalRisk  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
D_IN = 8


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, best-of-``repeats`` seconds per call afterwards;
    the minimum is the least noisy estimate on a shared machine)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.min(times))


def _risk(n: int):
    x, y = make_data(n, D_IN, jax.random.key(n))
    return x, EmpiricalRisk(x, y, weights=jnp.full((n,), 0.5))


def vector_field_cost(sizes, repeats: int) -> list[dict]:
    rows = []
    for n, m in sizes:
        x, risk = _risk(n)
        vg = eqx.filter_jit(eqx.filter_value_and_grad(lambda model, r=risk: r(model)))
        implicit = ImplicitReLU(D_IN, m, gamma=0.5, key=jax.random.key(1), init="spectral")
        shallow = ShallowReLU(D_IN, m, key=jax.random.key(1), init="lecun")
        c_imp, t_imp = _time(vg, implicit, repeats=repeats)
        c_sh, t_sh = _time(vg, shallow, repeats=repeats)
        steps = int(eqx.filter_jit(lambda mm, xx: mm.equilibrium(xx).num_steps)(implicit, x))
        rows.append(
            dict(
                N=n,
                m=m,
                implicit_ms=1e3 * t_imp,
                shallow_ms=1e3 * t_sh,
                ratio=t_imp / t_sh,
                picard_steps=steps,
                implicit_compile_s=c_imp,
                shallow_compile_s=c_sh,
            )
        )
        print(f"  N={n} m={m}: implicit {1e3 * t_imp:.3f} ms, shallow {1e3 * t_sh:.3f} ms")
    return rows


def iterations_vs_contraction(gammas, n: int, m: int, repeats: int) -> list[dict]:
    x, risk = _risk(n)
    rows = []
    for g in gammas:
        model = ImplicitReLU(D_IN, m, gamma=g, key=jax.random.key(1), init="spectral",
                             margin=0.0, max_steps=100_000)  # fmt: skip
        newton = ImplicitReLU(D_IN, m, gamma=g, key=jax.random.key(1), init="spectral",
                              margin=0.0, solver="newton")  # fmt: skip
        eq = eqx.filter_jit(lambda mm: mm.equilibrium(x))(model)
        eq_n = eqx.filter_jit(lambda mm: mm.equilibrium(x))(newton)
        contraction = g * float(np.linalg.norm(np.asarray(model.A), 2))
        vg = eqx.filter_jit(eqx.filter_value_and_grad(lambda mm, r=risk: r(mm)))
        _, t = _time(vg, model, repeats=repeats)
        rows.append(
            dict(
                gamma_norm=contraction,
                picard_steps=int(eq.num_steps),
                predicted=math.ceil(math.log(1e-10) / math.log(contraction)),
                picard_residual=float(jnp.max(eq.residual)),
                newton_steps=int(eq_n.num_steps),
                newton_residual=float(jnp.max(eq_n.residual)),
                picard_newton_max_diff=float(jnp.max(jnp.abs(eq.z - eq_n.z))),
                value_and_grad_ms=1e3 * t,
            )
        )
        print(f"  gamma||A||={contraction:.2f}: Picard {int(eq.num_steps)} steps")
    return rows


def markdown(cost: list[dict], iters: list[dict]) -> str:
    lines = [
        "| N | m | ImplicitReLU ms | ShallowReLU ms | ratio | Picard steps |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cost:
        lines.append(
            f"| {r['N']} | {r['m']} | {r['implicit_ms']:.3f} | {r['shallow_ms']:.3f} | "
            f"{r['ratio']:.1f} | {r['picard_steps']} |"
        )
    lines += [
        "",
        "| γ‖A‖₂ | Picard steps | predicted ⌈log 1e-10 / log γ‖A‖₂⌉ | Picard residual | "
        "Newton steps | Newton residual | value_and_grad ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in iters:
        lines.append(
            f"| {r['gamma_norm']:.2f} | {r['picard_steps']} | {r['predicted']} | "
            f"{r['picard_residual']:.1e} | {r['newton_steps']} | {r['newton_residual']:.1e} | "
            f"{r['value_and_grad_ms']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 20)
    sizes = [(16, 16), (32, 64)] if args.quick else [(16, 16), (32, 32), (32, 128), (64, 64),
                                                      (64, 256), (128, 512)]  # fmt: skip
    gammas = [0.3, 0.9] if args.quick else [0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99]
    print("vector-field cost:")
    cost = vector_field_cost(sizes, repeats)
    print("iterations vs gamma ||A||_2 (N=32, m=64):")
    iters = iterations_vs_contraction(gammas, 32, 64, repeats)
    result = dict(
        benchmark="implicit_cost",
        platform=platform.platform(),
        jax=jax.__version__,
        devices=[str(d) for d in jax.devices()],
        d_in=D_IN,
        repeats=repeats,
        vector_field_cost=cost,
        iterations_vs_contraction=iters,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "implicit_cost.json").write_text(json.dumps(result, indent=2))
    print()
    print(markdown(cost, iters))
    return result


if __name__ == "__main__":
    main()
