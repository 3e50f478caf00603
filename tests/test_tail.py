"""ExponentialTail (exprb32) and stiffness_index against closed forms and Tsit5.

Compilation dominates the cost of this file, so every adaptive solve goes through one
jitted function per solver and dtype (`_solve`), with the problem, tolerances, final time
and save times as traced arguments.
"""

from decimal import Decimal, getcontext

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from gflow_jax._numerics import fixed_unit_vector  # noqa: E402
from gflow_jax.dynamics.flow import _recording  # noqa: E402
from gflow_jax.dynamics.tail import ExponentialTail, phi_functions, stiffness_index  # noqa: E402

P = 25
LAMBDAS = np.logspace(-6, 2, P)  # Hessian eigenvalues, log-spread over 8 decades
_rng = np.random.default_rng(0)
ROT, _ = np.linalg.qr(_rng.standard_normal((P, P)))  # fixed rotation: a dense Hessian
THETA_STAR = _rng.standard_normal(P)
THETA0 = _rng.standard_normal(P)
HESS = ROT @ np.diag(LAMBDAS) @ ROT.T
# A non-quadratic risk: quadratic coupling (eigenvalues 1e-2 … 10) plus quartics.
HESS_NL = ROT @ np.diag(np.logspace(-2, 1, P)) @ ROT.T
STAR_NL = 0.5 * THETA_STAR


def _risk(theta, problem):
    """``½ (θ − θ*)ᵀ H (θ − θ*) + c Σ θ⁴``: quadratic, quartic, or both."""
    hess, theta_star, c = problem
    d = theta - theta_star
    return 0.5 * d @ (hess @ d) + c * jnp.sum(theta**4)


def _field(t, y, problem):
    return jax.tree_util.tree_map(jnp.negative, jax.grad(_risk)(y, problem))


TERM = diffrax.ODETerm(_field)


def _problem(hess, theta_star, c, dtype=jnp.float64):
    return tuple(jnp.asarray(x, dtype) for x in (hess, theta_star, c))


QUADRATIC = _problem(HESS, THETA_STAR, 0.0)
NONLINEAR = _problem(HESS_NL, STAR_NL, 1.0)
QUARTIC = _problem(np.zeros((P, P)), np.zeros(P), 1.0)


@jax.jit(static_argnames=("solver",))
def _solve(solver, problem, y0, t1, ts, rtol, atol):
    return diffrax.diffeqsolve(
        TERM,
        solver,
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=y0,
        args=problem,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=20_000,
    )


def _quadratic_closed_form(t, theta0=THETA0):
    """``θ* + Q e^{−Λt} Qᵀ (θ0 − θ*)``, in float64 numpy."""
    return THETA_STAR + ROT @ (np.exp(-LAMBDAS * t) * (ROT.T @ (theta0 - THETA_STAR)))


def _rel(y, exact, scale):
    return np.linalg.norm(np.asarray(y, np.float64) - exact) / scale


def test_phi_functions_accurate_near_zero_and_far_out():
    getcontext().prec = 50

    def reference(z):
        z = Decimal(z)
        if z == 0:
            return Decimal(1), Decimal(1) / 6, Decimal(1) / 24
        if abs(z) > 40:
            em1 = z.exp() - 1
        else:
            em1 = sum(z**j / _fact(j) for j in range(1, 200))
            if abs(z) < 1:  # φ3, φ4 from their series (the closed forms cancel at 50 digits)
                return (em1 / z, sum(z**j / _fact(j + 3) for j in range(60)),
                        sum(z**j / _fact(j + 4) for j in range(60)))  # fmt: skip
        phi3 = (em1 - z - z * z / 2) / z**3
        return em1 / z, phi3, (phi3 - Decimal(1) / 6) / z

    zs = [-1e12, -700.0, -30.0, -3.0, -2.0001, -1.9999, -1.0001, -0.9999, -0.3, -1e-3, -1e-9,
          0.0, 1e-6, 0.5, 1.5, 2.5]  # fmt: skip
    phis = phi_functions(jnp.asarray(zs))
    for k, z in enumerate(zs):
        for value, exact, ulps in zip((phi[k] for phi in phis), reference(z), (2, 4, 32),
                                      strict=True):  # fmt: skip
            bound = Decimal(ulps * 2.0**-52) * abs(exact)
            assert abs(Decimal(float(value)) - exact) <= bound, (z, value, exact)


def _fact(j):
    out = Decimal(1)
    for i in range(2, j + 1):
        out *= i
    return out


def test_quadratic_exact_and_geometric_tail_steps():
    ts = np.array([0.1, 1.0, 10.0, 1e3, 1e5, 1e8])
    sol = _solve(ExponentialTail(), QUADRATIC, jnp.asarray(THETA0), 1e8, ts, 1e-8, 1e-12)
    scale = np.linalg.norm(THETA0 - THETA_STAR)
    for t, y in zip(ts, sol.ys, strict=True):
        assert _rel(y, _quadratic_closed_form(t), scale) < 1e-8, t
    assert float(_risk(sol.ys[-1], QUADRATIC)) < 1e-14
    # Tsit5 is stability-limited (dt ≲ 3.5/λ_max = 0.035) long before the slow modes
    # have moved: to t = 100 it already needs thousands of steps.
    ref = _solve(diffrax.Tsit5(), QUADRATIC, jnp.asarray(THETA0), 100.0, ts / 1e6, 1e-8, 1e-12)
    tail_steps, tsit5_steps = int(sol.stats["num_steps"]), int(ref.stats["num_steps"])
    assert tail_steps * 20 < tsit5_steps, (tail_steps, tsit5_steps)


def test_nonlinear_same_trajectory_as_tsit5_at_tight_tolerance():
    ts = np.array([1.0, 10.0, 100.0, 100.0, 100.0, 100.0])
    y0 = jnp.asarray(THETA0)
    tail = _solve(ExponentialTail(), NONLINEAR, y0, 100.0, ts, 1e-10, 1e-12)
    ref = _solve(diffrax.Tsit5(), NONLINEAR, y0, 100.0, ts, 1e-10, 1e-12)
    for t, a, b in zip(ts, tail.ys, ref.ys, strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-7, t
    # and it is a genuinely nonlinear flow: far from the quadratic part's own flow
    assert np.linalg.norm(ref.ys[0] - _quadratic_closed_form(1.0)) > 1e-2


def test_degenerate_quartic_closed_form():
    ts = np.array([1.0, 1e2, 1e3, 1e4, 1e5, 1e6])
    sol = _solve(ExponentialTail(), QUARTIC, jnp.asarray(THETA0), 1e6, ts, 1e-8, 1e-12)
    for t, y in zip(ts, sol.ys, strict=True):
        exact = THETA0 / np.sqrt(1 + 8 * THETA0**2 * t)
        assert np.max(np.abs(y - exact) / np.abs(exact)) < 1e-6, t
    assert sol.result == diffrax.RESULTS.successful


def _fixed_step_solve(problem, y0, t1, dt):
    return diffrax.diffeqsolve(
        TERM,
        ExponentialTail(),
        t0=0.0,
        t1=t1,
        dt0=dt,
        y0=y0,
        args=problem,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=128,
    ).ys[0]


def test_order_four_and_error_estimate_order_four():
    y0, t1 = jnp.asarray(0.3 * THETA0), 1.0
    ts = np.full(6, t1)
    ref = _solve(diffrax.Tsit5(), NONLINEAR, y0, t1, ts, 1e-13, 1e-15).ys[0]
    solve = jax.jit(_fixed_step_solve)
    errors = [
        float(jnp.linalg.norm(solve(NONLINEAR, y0, t1, t1 / n) - ref)) for n in (16, 32, 64, 128)
    ]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 13.0) & (ratios < 19.0)), (errors, ratios)  # 2⁴ = 16

    # The embedded estimate h φ4(hJ)(12D₃ − 48D₂) is O(h⁴) per step.
    def estimate(h):
        _, err, _, _, _ = ExponentialTail().step(TERM, 0.0, h, y0, NONLINEAR, None, False)
        return jnp.linalg.norm(err)

    hs = 0.02 / 2.0 ** np.arange(4)
    est = np.asarray(jax.jit(jax.vmap(estimate))(jnp.asarray(hs)))
    ratios = est[:-1] / est[1:]
    assert np.all((ratios > 14.0) & (ratios < 18.0)), (est, ratios)


def test_stiffness_index_is_dt_times_largest_hessian_eigenvalue():
    y = jnp.asarray(THETA0)
    dt = jnp.asarray(0.01)

    def field(theta):
        return _field(0.0, theta, QUADRATIC)

    index_fn = jax.jit(lambda v: stiffness_index(field, y, dt, v, iters=4))
    index, v = index_fn(fixed_unit_vector(P, jnp.float64))
    assert float(index) < 0.01 * LAMBDAS[-1]  # power iteration: a lower bound
    for _ in range(10):  # warm-started, as along a trajectory
        index, v = index_fn(v)
    assert abs(float(index) / (0.01 * LAMBDAS[-1]) - 1) < 1e-6
    assert abs(abs(float(v @ ROT[:, -1])) - 1) < 1e-6  # the top eigenvector


T_END = 1e3
# the engine's controller wrapper, which records the next step for resuming
CONTROLLER = _recording(diffrax.PIDController(rtol=1e-8, atol=1e-12))


def _segment(y0, t0, dt0, controller_state, made_jump, t_interrupt, problem, grad_stop, t_end):
    """One member: stop when ``‖∇L‖ < grad_stop`` (an outcome) or after ``t_interrupt``."""

    def cond(t, y, args, **kwargs):
        return (jnp.linalg.norm(_field(t, y, args)) < grad_stop) | (t >= t_interrupt)

    sol = diffrax.diffeqsolve(
        TERM,
        ExponentialTail(),
        t0=t0,
        t1=t_end,
        dt0=dt0,
        y0=y0,
        args=problem,
        saveat=diffrax.SaveAt(t1=True, solver_state=True, controller_state=True, made_jump=True),
        stepsize_controller=CONTROLLER,
        event=diffrax.Event(cond),
        max_steps=4096,
        solver_state=None,
        controller_state=controller_state,
        made_jump=made_jump,
    )
    state = sol.controller_state
    return sol.ys[0], sol.ts[0], state[1], state, sol.made_jump, sol.event_mask


_run = jax.jit(jax.vmap(_segment, in_axes=(0, 0, 0, 0, 0, None, None, None, None)))


def test_vmap_event_and_resume_match_one_uninterrupted_solve():
    scales = np.logspace(-2.5, 0.5, 8)
    batch = len(scales)
    t0s, dt0s, no_jump = jnp.zeros(batch), jnp.full(batch, 1e-3), jnp.zeros(batch, bool)

    def start(problem):
        y0s = jnp.asarray(THETA_STAR + scales[:, None] * (THETA0 - THETA_STAR))
        init = jax.vmap(
            lambda y, dt: CONTROLLER.wrap(1).init(TERM, 0.0, 1.0, y, dt, problem, None, 3)[1]
        )
        return y0s, init(y0s, dt0s)

    # Quadratic: members started closer to θ* meet the gradient threshold earlier.
    y0s, states = start(QUADRATIC)
    y, t, _, _, _, stopped = _run(y0s, t0s, dt0s, states, no_jump, jnp.inf, QUADRATIC, 1e-3, T_END)
    y, t, stopped = np.asarray(y), np.asarray(t), np.asarray(stopped)
    assert stopped.any() and not stopped.all(), t
    assert np.all(t[~stopped] == T_END) and np.any(t[stopped] < T_END), t
    for b in range(batch):
        exact = _quadratic_closed_form(t[b], np.asarray(y0s[b]))
        assert _rel(y[b], exact, scales[b] * np.linalg.norm(THETA0 - THETA_STAR)) < 1e-8, b
        grad_norm = float(jnp.linalg.norm(_field(0.0, jnp.asarray(y[b]), QUADRATIC)))
        assert (grad_norm < 1e-3) == stopped[b], b

    # The same solves in two segments (interrupted at the first step past t_interrupt,
    # then resumed from the saved solver/controller state) end where one solve ends: on
    # the quadratic (geometric steps, some members stop in each segment) and on a
    # weakly quartic risk (a transient of small, varying steps; no stop rule).
    weakly_quartic = _problem(HESS, THETA_STAR, 1e-2)
    for problem, grad_stop, t_interrupt, t_end in [
        (QUADRATIC, 1e-3, 10.0, T_END),
        (weakly_quartic, 0.0, 0.1, 0.4),
    ]:
        y0s, states = start(problem)
        whole = _run(y0s, t0s, dt0s, states, no_jump, jnp.inf, problem, grad_stop, t_end)
        y1, t1, dt1, states1, jump1, _ = _run(
            y0s, t0s, dt0s, states, no_jump, t_interrupt, problem, grad_stop, t_end
        )
        grad_norms = jnp.linalg.norm(jax.vmap(_field, (None, 0, None))(0.0, y1, problem), axis=1)
        done = np.asarray(grad_norms < grad_stop)  # a real outcome already in segment one
        assert not done.all() and np.all(np.asarray(t1)[~done] < np.asarray(whole[1])[~done])
        y2, t2, *_ = _run(y1, t1, dt1, states1, jump1, jnp.inf, problem, grad_stop, t_end)
        y_seg = np.where(done[:, None], np.asarray(y1), np.asarray(y2))
        t_seg = np.where(done, np.asarray(t1), np.asarray(t2))
        np.testing.assert_allclose(t_seg, whole[1], rtol=1e-13)
        np.testing.assert_allclose(y_seg, whole[0], rtol=0, atol=1e-12)


def test_float32_reaches_closed_form():
    # float32 resolves Hessian eigenvalues only down to ~ε·λ_max (the gradient itself has
    # that round-off), so the spectrum here spans 3 decades, not 8.
    lambdas = np.logspace(-2, 1, P)
    hess = ROT @ np.diag(lambdas) @ ROT.T
    ts = np.array([0.1, 1.0, 10.0, 100.0, 1e3, 1e4])
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    problem = _problem(hess, THETA_STAR, 0.0, jnp.float32)
    sol = _solve(ExponentialTail(), problem, f32(THETA0), f32(1e4), f32(ts), f32(1e-5), f32(1e-7))
    assert sol.ys.dtype == jnp.float32
    scale = np.linalg.norm(THETA0 - THETA_STAR)
    for t, y in zip(ts, sol.ys, strict=True):
        exact = THETA_STAR + ROT @ (np.exp(-lambdas * t) * (ROT.T @ (THETA0 - THETA_STAR)))
        assert _rel(y, exact, scale) < 1e-4, t
    assert int(sol.stats["num_steps"]) < 100


def test_non_finite_jacobian_is_a_rejected_step_and_never_reaches_lapack():
    # LAPACK's eigh iterates; on NaN/inf input some builds crash the process (a CI worker
    # died in the exponential tail of a diverging batch member). The step must hand it a
    # finite matrix and report an infinite error (rejected step) instead.
    from gflow_jax._numerics import finite_eigh

    bad = jnp.asarray([[1.0, jnp.nan], [jnp.nan, 2.0]])
    lam, vecs, finite = finite_eigh(bad)
    assert not bool(finite) and np.all(np.isfinite(lam)) and np.all(np.isfinite(vecs))
    lam, vecs, finite = finite_eigh(jnp.asarray([[2.0, 1.0], [1.0, 2.0]]))
    assert bool(finite)
    np.testing.assert_allclose(lam, [1.0, 3.0], rtol=1e-14)
    np.testing.assert_allclose(np.abs(vecs), np.sqrt(0.5), rtol=1e-14)

    step = jax.jit(lambda y0: ExponentialTail().step(TERM, 0.0, 0.1, y0, QUARTIC, None, False))
    for y0 in (jnp.full(P, 1e200), jnp.full(P, jnp.nan)):  # ∇²L = 12 θ² overflows; NaN
        _, err, info, _, _ = step(y0)
        assert np.all(np.isinf(np.asarray(err)))
        assert np.all(np.isfinite(info["mu"])) and np.all(np.isfinite(info["q"]))
