"""PiecewiseGradientFlow: kink crossings as events, Filippov sliding (issue 13).

Sizes are tiny; each configuration compiles once per module.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow_jax as gf
from gflow_jax.dynamics.piecewise import applies
from gflow_jax.models.base import partition
from gflow_jax.risks._kinks import masked_outputs

# --------------------------------------------------------------------------------------
# One neuron, two points: the flow reaches the kink of x₁ = 1 and slides on it.
#
# N(x) = relu(w x + b) (v = 1, c = 0 frozen), points (1, −1), (2, 2), weights ½.
# Off the kink s₁ = w + b < 0 (unit off at x₁, on at x₂): with r = 2w + b − 2,
# ẇ = −2r, ḃ = −r, so r(t) = r₀e^{−5t} and ṡ₁ = −3r. From (w, b) = (1.6, −1.8):
# r₀ = −0.6, s₁(t) = −0.2 + 0.36(1 − e^{−5t}) vanishes at t* = ln(9/4)/5. There the
# on-side field has ṡ₁ = −(2 + 3r) < 0 (r(t*) = −4/15 > −2/3): both sides push into the
# surface, which the flow then slides on. On s₁ = 0 (b = −w, r = w − 2), Filippov's
# tangent field is the projection of the off-side one: ẇ = −(w − 2)/2, ḃ = −ẇ, so
# w(t) = 2 + (w* − 2)e^{−(t − t*)/2}, w* = 1.6 + 0.24·5/9; its weight α = −3r/2 stays in
# (0, 1). Limit (2, −2): L = ½, on the kink, where the generalised gradient (relu'(0) =
# 0, the off side) is (−0 ... ) ≠ 0 but the Filippov velocity is 0.
# --------------------------------------------------------------------------------------

T_STAR = math.log(9 / 4) / 5
W_STAR = 1.6 + 0.24 * 5 / 9


def sliding_exact(t: float) -> np.ndarray:
    if t <= T_STAR:
        e = math.exp(-5 * t)
        return np.array([1.6 + 1.2 * (1 - e) / 5, -1.8 + 0.6 * (1 - e) / 5])
    w = 2 + (W_STAR - 2) * math.exp(-(t - T_STAR) / 2)
    return np.array([w, -w])


def sliding_problem():
    x = jnp.array([[1.0], [2.0]])
    y = jnp.array([[-1.0], [2.0]])
    model = gf.ShallowReLU.from_flat(jnp.array([1.6, -1.8, 1.0, 0.0]), 1, 1, frozen=("v", "c"))
    return model, gf.EmpiricalRisk(x, y)


PIECEWISE = gf.PiecewiseGradientFlow(rtol=1e-10, atol=1e-12)
# the sliding onset t* is a save time: no save interval straddles the jump of θ̇ there
DENSE_TS = np.sort(np.append(np.linspace(0.0, 4.0, 4001), T_STAR))


@pytest.fixture(scope="module")
def sliding():
    model, risk = sliding_problem()
    traj = gf.integrate(model, risk, 4.0, PIECEWISE, save_ts=DENSE_TS, save_path=True, limits=None)
    return model, risk, traj


def _flat_path(traj):
    return np.concatenate([np.asarray(traj.path.w).reshape(len(traj.ts), -1),
                           np.asarray(traj.path.b).reshape(len(traj.ts), -1)], axis=1)  # fmt: skip


def test_sliding_matches_hand_solution(sliding):
    _, _, traj = sliding
    path = _flat_path(traj)
    for t in (0.05, T_STAR, 0.3, 1.0, 2.5, 4.0):
        i = int(np.argmin(np.abs(DENSE_TS - t)))
        np.testing.assert_allclose(path[i], sliding_exact(DENSE_TS[i]), rtol=0, atol=1e-9)
    k = traj.kinks
    assert int(k.num_slides) == 1 and int(k.num_sliding) == 1
    assert int(k.num_crossings) == 0
    np.testing.assert_allclose(float(k.sliding_time), 4.0 - T_STAR, rtol=1e-9)
    # the sliding motion is cheap: no chattering, no rejection storm
    assert int(traj.num_steps) < 200 and int(traj.num_rejected) < 10


def test_sliding_onset_time():
    """The flow's entry into sliding, located on its dense output, is t* (bisection on t1:
    the last horizon without a slide and the first with one bracket the event)."""
    model, risk = sliding_problem()
    ts = np.array([0.0])

    def slides(t1):
        traj = gf.integrate(model, risk, t1, PIECEWISE, save_ts=ts, limits=None)
        return int(traj.kinks.num_slides) > 0

    lo, hi = 0.1, 0.3
    assert not slides(lo) and slides(hi)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if slides(mid) else (mid, hi)
    assert abs(hi - T_STAR) < 1e-9


def _energy_terms(traj, risk, keep=None):
    """``(Σ ΔL, Σ ‖Δθ‖²/Δt)`` over the save intervals (those in `keep`): equal up to
    ``O(Δt²)`` where ``θ̇`` is smooth (a jump of ``θ̇`` inside an interval costs ``O(Δt)``)."""
    path = np.asarray(jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(traj.path))
    dt = np.diff(np.asarray(traj.ts))
    kinetic = np.sum(np.diff(path, axis=0) ** 2, axis=1) / dt
    drop = -np.diff(np.asarray(traj.risk))
    keep = np.ones(dt.shape, bool) if keep is None else keep
    return np.sum(drop[keep]), np.sum(kinetic[keep])


def test_energy_identity_through_sliding(sliding):
    """L(θ₀) − L(θ_t) = ∫‖θ̇‖² with θ̇ the Filippov velocity; the generalised gradient G
    (relu'(0) = 0) of the sliding states is *not* the velocity: ∫‖G‖² is larger."""
    _, risk, traj = sliding
    drop, kinetic = _energy_terms(traj, risk)
    np.testing.assert_allclose(kinetic, drop, rtol=1e-5)  # estimator: O(Δt²)
    # the saved grad_norm is ‖G(θ)‖ (Problem.diagnose): on the surface G is the off-side
    # field, one vertex of Filippov's set, which points off the surface
    g = np.asarray(traj.grad_norm)
    dt = np.diff(DENSE_TS)
    g_integral = np.sum(0.5 * (g[1:] ** 2 + g[:-1] ** 2) * dt)
    assert g_integral > 1.5 * drop
    # at the final state (on the kink) G is far from the Filippov velocity
    w, b = sliding_exact(4.0)
    velocity = np.array([-(w - 2) / 2, (w - 2) / 2])
    off_side = np.array([-2 * (w - 2), -(w - 2)])  # −G: only x₂ counts (relu'(0) = 0)
    assert np.linalg.norm(off_side - velocity) > 0.5 * np.linalg.norm(velocity)
    np.testing.assert_allclose(g[-1], np.linalg.norm(off_side), rtol=1e-6)


def test_plain_solver_chatters_on_the_sliding_example():
    """The plain generalised-gradient flow needs a huge number of steps for t = 1 of the
    sliding motion (it chatters across the surface), and what it does reach stays near the
    Filippov solution."""
    model, risk = sliding_problem()
    plain = gf.GradientFlow(
        tail="explicit", controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
        max_steps=20000,
    )  # fmt: skip
    traj = gf.integrate(model, risk, 1.0, plain, save_ts=np.array([0.0, 0.3]), save_path=True,
                        limits=None, throw=False)  # fmt: skip
    assert int(traj.num_steps) >= 20000
    path = _flat_path(traj)
    np.testing.assert_allclose(path[1], sliding_exact(0.3), atol=1e-4)


# --------------------------------------------------------------------------------------
# Crossings without sliding: a width-3 network on 6 points
# --------------------------------------------------------------------------------------

T_CROSS = 3.0
CHECK_TS = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])


def crossing_problem(dtype=jnp.float64):
    x = jnp.linspace(-1.0, 1.0, 6, dtype=dtype)[:, None]
    y = jnp.abs(x) + 0.5 * x
    model = gf.ShallowReLU(1, 3, key=jax.random.key(1), dtype=dtype)
    return model, gf.EmpiricalRisk(x, y)


@pytest.fixture(scope="module")
def crossing():
    model, risk = crossing_problem()
    traj = gf.integrate(model, risk, T_CROSS, PIECEWISE, save_ts=CHECK_TS, save_path=True,
                        limits=None)  # fmt: skip
    return model, risk, traj


def _reference_solution(model, risk, t1, rtol=1e-12):
    """Plain Tsit5 of −G at a tight tolerance, with dense output (exact but slow at kinks)."""
    params, static = partition(model)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def field(t, u, args):
        return -jax.grad(lambda p: risk(eqx.combine(unravel(p), static)))(u)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, t1, None, flat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3),
        saveat=diffrax.SaveAt(dense=True), max_steps=200000,
    )  # fmt: skip
    return sol, unravel, static


def test_agrees_with_tight_plain_solver_off_sliding(crossing):
    model, risk, traj = crossing
    assert int(traj.kinks.num_slides) == 0 and int(traj.kinks.num_crossings) >= 2
    plain = gf.GradientFlow(
        tail="explicit", controller=diffrax.PIDController(rtol=1e-11, atol=1e-14),
        max_steps=2**20,
    )  # fmt: skip
    ref = gf.integrate(model, risk, T_CROSS, plain, save_ts=CHECK_TS, save_path=True, limits=None)
    mine = jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(traj.path)
    theirs = jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(ref.path)
    np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(traj.risk, ref.risk, rtol=1e-8)
    # far fewer steps (the plain solver pays rejections at every crossing)
    assert int(traj.num_rejected) <= int(ref.num_rejected)


def test_crossing_times_agree_with_bisection_on_dense_reference():
    model, risk = crossing_problem()
    sol, unravel, static = _reference_solution(model, risk, T_CROSS)

    def s_at(t):
        m = eqx.combine(unravel(sol.evaluate(t)), static)
        return np.asarray(m.switching_functions(risk.x)).ravel()

    grid = np.linspace(0.0, T_CROSS, 3001)
    values = np.stack([s_at(t) for t in grid])
    changes = np.flatnonzero(np.any(np.sign(values[1:]) != np.sign(values[:-1]), axis=1))
    assert changes.size >= 1
    lo, hi = grid[changes[0]], grid[changes[0] + 1]
    k = int(np.flatnonzero(np.sign(values[changes[0]]) != np.sign(values[changes[0] + 1]))[0])
    sign_lo = np.sign(s_at(lo)[k])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.sign(s_at(mid)[k]) == sign_lo else (lo, mid)
    t_ref = 0.5 * (lo + hi)

    ts = np.array([0.0])

    def crossed(t1):
        traj = gf.integrate(model, risk, t1, PIECEWISE, save_ts=ts, limits=None)
        return int(traj.kinks.num_crossings) > 0

    a, b = t_ref - 1e-3, t_ref + 1e-3
    assert not crossed(a) and crossed(b)
    for _ in range(30):
        mid = 0.5 * (a + b)
        a, b = (a, mid) if crossed(mid) else (mid, b)
    assert abs(b - t_ref) < 1e-8


def test_energy_identity_through_crossings():
    model, risk = crossing_problem()
    ts = np.linspace(0.0, T_CROSS, 3001)
    traj = gf.integrate(model, risk, T_CROSS, PIECEWISE, save_ts=ts, save_path=True, limits=None)
    assert int(traj.kinks.num_crossings) >= 2
    # the save intervals in which no switching function changes sign (θ̇ smooth there)
    signs = np.sign(np.asarray(jax.vmap(lambda m: m.switching_functions(risk.x))(traj.path)))
    smooth = np.all(signs[1:] == signs[:-1], axis=(1, 2))
    assert 1 <= np.sum(~smooth) <= 10
    drop, kinetic = _energy_terms(traj, risk, smooth)
    assert drop > 0.9 * float(traj.risk[0] - traj.risk[-1])
    np.testing.assert_allclose(kinetic, drop, rtol=1e-5)  # estimator: O(Δt²)
    # off sliding the saved ‖G‖ is the speed
    g = np.asarray(traj.grad_norm)
    g_integral = 0.5 * (g[1:] ** 2 + g[:-1] ** 2) * np.diff(ts)
    np.testing.assert_allclose(np.sum(g_integral[smooth]), drop, rtol=1e-4)  # trapezoid: O(Δt²)


def test_ensemble_equals_per_member():
    _, risk = crossing_problem()
    keys = jax.random.split(jax.random.key(3), 5)

    def init(key):
        return gf.ShallowReLU(1, 3, key=key)

    dyn = gf.PiecewiseGradientFlow(rtol=1e-8, atol=1e-10)
    ens = gf.run_ensemble(init, risk, keys, 2.0, dyn, n_save=4, limits=None, chunk_size=4,
                          segment_steps=8)  # fmt: skip
    for i in (0, 3, 4):
        traj = gf.integrate(init(keys[i]), risk, 2.0, dyn, n_save=4, limits=None)
        flat = jax.flatten_util.ravel_pytree(partition(traj.model)[0])[0]
        assert int(ens.num_steps[i]) == int(traj.num_steps)
        np.testing.assert_allclose(ens.final_params[i], flat, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ens.risk[i], traj.risk, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Deep ReLU networks, float32, applicability
# --------------------------------------------------------------------------------------


def test_masked_outputs_is_the_network_on_its_pattern():
    x = jnp.linspace(-1.0, 1.0, 7)[:, None]
    for model in (
        gf.ShallowReLU(1, 4, key=jax.random.key(0)),
        gf.DeepMLP((1, 3, 4, 1), "relu", key=jax.random.key(1), init="he"),
    ):
        mask = (model.switching_functions(x) > 0).astype(x.dtype)
        np.testing.assert_allclose(masked_outputs(model, x, mask), model(x), rtol=1e-14)


def test_deep_relu_agrees_with_plain_solver():
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    risk = gf.EmpiricalRisk(x, jnp.abs(x))
    model = gf.DeepMLP((1, 3, 3, 1), "relu", key=jax.random.key(3), init="he")
    model = eqx.tree_at(lambda m: m.biases, model, (jnp.full(3, 0.1), jnp.full(3, 0.1)))
    ts = np.array([0.0, 0.5, 1.0, 2.0])
    traj = gf.integrate(model, risk, 2.0, PIECEWISE, save_ts=ts, limits=None)
    plain = gf.GradientFlow(tail="explicit",
                            controller=diffrax.PIDController(rtol=1e-11, atol=1e-14))  # fmt: skip
    ref = gf.integrate(model, risk, 2.0, plain, save_ts=ts, limits=None)
    assert int(traj.kinks.num_slides) == 0 and int(traj.kinks.num_crossings) >= 2
    np.testing.assert_allclose(traj.risk, ref.risk, rtol=1e-8)


def test_float32_runs():
    model, risk = crossing_problem(jnp.float32)
    traj = gf.integrate(model, risk, T_CROSS, gf.PiecewiseGradientFlow(), save_ts=CHECK_TS,
                        limits=None)  # fmt: skip
    assert traj.final_risk.dtype == jnp.float32
    assert traj.outcome_name in ("UNFINISHED", "CONVERGED", "CRITICAL_POINT")
    assert float(traj.final_risk) < float(traj.initial_risk)


def test_applies_and_refuses_other_problems():
    model, risk = crossing_problem()
    assert applies(model, risk)
    assert not applies(gf.DeepMLP((1, 3, 1), "tanh", key=jax.random.key(0)), risk)
    smooth = gf.DeepMLP((1, 3, 1), "tanh", key=jax.random.key(0))
    with pytest.raises(TypeError, match="PiecewiseGradientFlow"):
        gf.integrate(smooth, risk, 1.0, gf.PiecewiseGradientFlow(), limits=None)
