"""PiecewiseGradientFlow: kink crossings as events, Filippov sliding (issue 13).

Sizes are tiny. Compilation dominates the cost, so every configuration compiles once per
module: later calls of ``integrate`` reuse a compiled program by keeping the dynamics,
the shape of ``save_ts`` and ``save_path`` (``t1`` and the save times are traced).
"""

import functools
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
    # a third point of weight 0 (no term, no kink) gives the data the shape of the
    # three-point problems below, which then reuse this compilation (_one_neuron)
    x = jnp.array([[1.0], [2.0], [3.0]])
    y = jnp.array([[-1.0], [2.0], [0.0]])
    model = gf.ShallowReLU.from_flat(jnp.array([1.6, -1.8, 1.0, 0.0]), 1, 1, frozen=("v", "c"))
    return model, gf.EmpiricalRisk(x, y, weights=jnp.array([0.5, 0.5, 0.0]))


def _one_neuron(model, risk, t1, ts, dynamics=None):
    """`dynamics` (default `PIECEWISE`) with the one save layout of every one-neuron problem
    (one compilation per dynamics: ``t1``, the save times and the data are traced)."""
    assert ts.shape == DENSE_TS.shape
    dynamics = PIECEWISE if dynamics is None else dynamics
    return gf.integrate(model, risk, t1, dynamics, save_ts=ts, save_path=True)


# The two configurations differ only in the stiffness threshold, a traced value, so they
# share one compilation per problem layout. PIECEWISE never switches (the threshold is
# out of reach): Tsit5 with the pattern frozen throughout. FORCED switches to the
# exponential tail at a member's 8th step: every later step, crossing, sliding entry
# and release happens in the tail phase.
PIECEWISE = gf.PiecewiseGradientFlow(
    rtol=1e-10, atol=1e-12, stiffness_threshold=1e300, stiffness_check_steps=8
)
FORCED = gf.PiecewiseGradientFlow(
    rtol=1e-10, atol=1e-12, stiffness_threshold=1e-12, stiffness_check_steps=8
)
# the default threshold (2): the tail once explicit steps are stability-limited
STIFF = gf.PiecewiseGradientFlow(rtol=1e-10, atol=1e-12, stiffness_check_steps=8)
# the sliding onset t* is a save time: no save interval straddles the jump of θ̇ there
DENSE_TS = np.sort(np.append(np.linspace(0.0, 4.0, 4001), T_STAR))


@pytest.fixture(scope="module")
def sliding():
    model, risk = sliding_problem()
    return model, risk, _one_neuron(model, risk, 4.0, DENSE_TS)


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


def test_sliding_onset_time(sliding):
    """The flow's entry into sliding, located on its dense output, is t*: a horizon 1e-9
    before t* has no slide, one 1e-9 after it has one (and ``sliding_time`` at t = 4 is
    ``4 − t*``, above)."""
    model, risk, _ = sliding

    def slides(t1):
        traj = _one_neuron(model, risk, t1, np.linspace(0.0, t1, DENSE_TS.size))
        return int(traj.kinks.num_slides) > 0

    assert not slides(T_STAR - 1e-9)
    assert slides(T_STAR + 1e-9)


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
    """The plain generalised-gradient flow spends a budget of 3 000 steps (the piecewise
    flow needs < 200 for t = 4) without reaching t = 1: it chatters across the surface,
    most steps rejected; what it does reach stays near the Filippov solution."""
    model, risk = sliding_problem()
    plain = gf.GradientFlow(
        tail="explicit", controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
        max_steps=3000,
    )  # fmt: skip
    traj = gf.integrate(model, risk, 1.0, plain, save_ts=np.array([0.0, 0.2]), save_path=True,
                        limits=None, throw=False)  # fmt: skip
    assert int(traj.num_steps) >= 3000 and float(traj.t_stop) < 0.5
    assert int(traj.num_rejected) > 0.3 * int(traj.num_steps)
    path = _flat_path(traj)
    np.testing.assert_allclose(path[1], sliding_exact(0.2), atol=1e-4)


# --------------------------------------------------------------------------------------
# Entering a sliding surface and leaving it again: one neuron, three points.
#
# N(x) = relu(w x + b) (v = 1, c = 0 frozen), points (1, −1), (2, 1), (3, 3), weights ⅓.
# Off the kink s₁ = w + b < 0 of x₁ = 1 (units on at x₂, x₃): L = ⅓(r₂² + r₃² + 1) with
# r₂ = 2w + b − 1, r₃ = 3w + b − 3, an affine flow θ̇ = −Hθ + g towards (2, −3) (where
# s₁ = −1). On s₁ = 0 (b = −w: r₂ = w − 1, r₃ = 2w − 3) Filippov's tangent field is the
# projection of the off-side one: ẇ = −⅓(r₂ + 2r₃) = −(5/3)(w − 7/5), ḃ = −ẇ. The off
# side pushes into the surface while ṡ₁ = −(2/3)(3r₂ + 4r₃) = −(2/3)(11w − 15) > 0, the
# on side (which adds −(4/3)(s₁ + 1) to ṡ₁) while ṡ₁ < 4/3, i.e. sliding needs
# 13/11 < w < 15/11. From (1, −1.3) the off-side flow reaches s₁ = 0 at w₁ ≈ 1.2255
# (t₁ ≈ 0.136); on the surface w rises towards 7/5, so the off side stops attracting at
# w = 15/11 (Filippov weight α = 0) and the flow leaves to the off side at
# t₂ = t₁ + (3/5)·ln((7/5 − w₁)/(7/5 − 15/11)) ≈ 1.08, then follows the affine flow from
# (15/11, −15/11) to (2, −3).
# --------------------------------------------------------------------------------------

_LEAVE_A = np.array([[2.0, 1.0], [3.0, 1.0]])
_LEAVE_H = (2 / 3) * _LEAVE_A.T @ _LEAVE_A
_LEAVE_FIT = np.array([2.0, -3.0])  # the off-side minimum: H·fit = g
W_EXIT = 15 / 11


def _off_side(theta0: np.ndarray, t: float) -> np.ndarray:
    """The affine off-side flow ``θ(t) = fit + exp(−Ht)(θ₀ − fit)`` (H symmetric)."""
    lam, q = np.linalg.eigh(_LEAVE_H)
    return _LEAVE_FIT + q @ (np.exp(-lam * t) * (q.T @ (theta0 - _LEAVE_FIT)))


@functools.cache
def _leave_times() -> tuple[float, float, float]:
    """``(t₁, w₁, t₂)``: the entry time (bisection on the closed form), entry w, exit time."""
    theta0 = np.array([1.0, -1.3])
    lo, hi = 0.0, 0.5  # s₁ < 0 at lo, > 0 at hi (the off-side flow would cross)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _off_side(theta0, mid).sum() < 0 else (lo, mid)
    t1 = 0.5 * (lo + hi)
    w1 = float(_off_side(theta0, t1)[0])
    return t1, w1, t1 + 0.6 * math.log((1.4 - w1) / (1.4 - W_EXIT))


def leave_exact(t: float) -> np.ndarray:
    t1, w1, t2 = _leave_times()
    if t <= t1:
        return _off_side(np.array([1.0, -1.3]), t)
    if t <= t2:
        w = 1.4 + (w1 - 1.4) * math.exp(-(5 / 3) * (t - t1))
        return np.array([w, -w])
    return _off_side(np.array([W_EXIT, -W_EXIT]), t - t2)


@pytest.mark.parametrize("dynamics", [PIECEWISE, FORCED], ids=["explicit", "tail"])
def test_enters_and_leaves_a_sliding_surface(dynamics):
    """Also with the exponential tail from the 8th step (`FORCED`): the entry into sliding
    is located on an exponential step's dense output, the member slides in the tail
    phase (linearised projected field) and leaves the surface there."""
    t1, w1, t2 = _leave_times()
    assert 13 / 11 < w1 < W_EXIT and 0.1 < t1 < t2 - 0.5  # the example is as described
    x = jnp.array([[1.0], [2.0], [3.0]])
    risk = gf.EmpiricalRisk(x, jnp.array([[-1.0], [1.0], [3.0]]))
    model = gf.ShallowReLU.from_flat(jnp.array([1.0, -1.3, 1.0, 0.0]), 1, 1, frozen=("v", "c"))
    check = np.array([0.05, t1, 0.5, t2, t2 + 0.05, t2 + 0.5, 2.0, 4.0, 8.0])
    ts = np.sort(np.concatenate([np.linspace(0.0, 8.0, DENSE_TS.size - check.size), check]))
    traj = _one_neuron(model, risk, 8.0, ts, dynamics)
    if dynamics is FORCED:
        assert float(traj.t_tail) < t1 and int(traj.num_tail_steps) > 0
        # piecewise quadratic: the exponential steps are exact, a handful suffice
        assert int(traj.num_steps) < 30
    path = _flat_path(traj)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(path[i], leave_exact(t), rtol=0, atol=1e-8)
    k = traj.kinks
    assert int(k.num_slides) == 1 and int(k.num_sliding) == 0  # left the surface
    assert int(k.num_crossings) == 1  # the release (no transversal crossing)
    np.testing.assert_allclose(float(k.sliding_time), t2 - t1, atol=1e-7)
    # after the exit s₁ = w + b moves away from the surface (towards −1 at the fit)
    after = ts > t2
    s1 = path.sum(axis=1)[after]
    distinct = np.diff(ts[after]) > 1e-9  # the grid repeats some check times
    assert np.all(np.diff(s1)[distinct] < 0) and s1[-1] < -0.2
    assert int(traj.num_rejected) < 10


def test_limit_is_classified_inside_the_final_pattern():
    """Same network and points x = 1, 2, 3; from θ₀ on the slow eigenvector of H through
    (1, −1) the flow stays off at x₁ and converges to (1, −1), where s₁ = 0: a limit on a
    kink, reached from inside the region. With y = (−1, 1, 2) it is a positive-risk
    minimum (L = ⅓, the x₁ residual): the plain risk's kink margin vanishes at the refined
    limit (the plain classification says UNRESOLVED: KINK), the one inside the final
    pattern is LOCAL_MIN with the Hessian H of the off-side risk. With y = (0, 1, 2) the
    same point is a zero."""
    lam, q = np.linalg.eigh(_LEAVE_H)
    theta0 = np.array([1.0, -1.0]) + 0.2 * q[:, 0] * np.sign(q[0, 0])
    model = gf.ShallowReLU.from_flat(jnp.array([*theta0, 1.0, 0.0]), 1, 1, frozen=("v", "c"))
    x = jnp.array([[1.0], [2.0], [3.0]])
    kink_tol = gf.LimitAnalysis().resolve(jnp.float64).kink_tol
    for y, limit in (((-1.0, 1.0, 2.0), gf.Limit.LOCAL_MIN), ((0.0, 1.0, 2.0), gf.Limit.ZERO_RISK)):
        risk = gf.EmpiricalRisk(x, jnp.array(y)[:, None])
        # t1 = 1000: the stop rule ends the flow first (at t ≈ 170)
        traj = _one_neuron(model, risk, 1000.0, np.linspace(0.0, 1000.0, DENSE_TS.size))
        assert float(traj.t_stop) < 1000.0
        assert int(traj.kinks.num_crossings) == 0 and int(traj.kinks.num_slides) == 0
        np.testing.assert_array_equal(np.asarray(traj.kinks.pattern).ravel(), [False, True, True])
        report = traj.limit
        assert int(report.limit) == limit
        np.testing.assert_allclose(report.limit_params, [1.0, -1.0], atol=1e-9)
        if limit == gf.Limit.LOCAL_MIN:
            at_limit = jnp.array([*np.asarray(report.limit_params), 1.0, 0.0])
            limit_model = gf.ShallowReLU.from_flat(at_limit, 1, 1, frozen=("v", "c"))
            assert float(risk.kink_margin(limit_model)) <= kink_tol
            np.testing.assert_allclose(float(report.limit_risk), 1 / 3, rtol=1e-12)
            np.testing.assert_allclose([report.limit_min_eig, report.limit_max_eig], lam, rtol=1e-8)
            assert int(report.limit_num_negative) == 0


def test_tail_engages_near_a_minimum_and_is_exact_on_a_quadratic_pattern():
    """The limit example with the default threshold (2, checked every 8 steps), from
    θ₀ = fit + 0.2 q_slow − 0.05 q_fast: the member stays in the pattern (off at x₁)
    whose risk is quadratic, ``θ(t) = fit + exp(−Ht)(θ₀ − fit)`` with the off-side
    Hessian ``H`` (``λ = 0.045, 9.95``). Once explicit steps reach the
    stability limit the member switches to the exponential tail, which is exact on
    a quadratic risk: its steps grow geometrically, far fewer than the
    ``(t₁ − t_tail)·λ_max/3.5`` steps that Tsit5's stability alone would need."""
    lam, q = np.linalg.eigh(_LEAVE_H)
    q = q * np.sign(q[0])
    fit = np.array([1.0, -1.0])
    theta0 = fit + 0.2 * q[:, 0] - 0.05 * q[:, 1]
    model = gf.ShallowReLU.from_flat(jnp.array([*theta0, 1.0, 0.0]), 1, 1, frozen=("v", "c"))
    x = jnp.array([[1.0], [2.0], [3.0]])
    risk = gf.EmpiricalRisk(x, jnp.array([[-1.0], [1.0], [2.0]]))
    t1 = 150.0
    ts = np.linspace(0.0, t1, DENSE_TS.size)
    exact = fit + (q @ (np.exp(-np.outer(lam, ts)) * (q.T @ (theta0 - fit))[:, None])).T
    s = exact @ np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])  # s_i = w x_i + b
    assert np.all(s[:, 0] < 0) and np.all(s[:, 1:] > 0)  # one pattern all along
    traj = _one_neuron(model, risk, t1, ts, STIFF)
    assert float(traj.t_stop) == t1
    assert int(traj.kinks.num_crossings) == 0 and int(traj.kinks.num_slides) == 0
    np.testing.assert_allclose(_flat_path(traj), exact, rtol=0, atol=1e-9)
    t_tail, tail_steps = float(traj.t_tail), int(traj.num_tail_steps)
    assert 0 < t_tail < 20 and tail_steps > 0
    assert tail_steps < 0.1 * (t1 - t_tail) * lam[-1] / 3.5
    assert int(traj.num_steps) - tail_steps <= 2 * 128  # explicit steps: the transient


# --------------------------------------------------------------------------------------
# Crossings without sliding: a width-3 network on 6 points
# --------------------------------------------------------------------------------------

T_CROSS = 3.0
# dense save grid (energy identity); CHECK_TS (agreement with the plain solver) lie on it
CROSS_TS = np.linspace(0.0, T_CROSS, 3001)
CHECK_TS = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])
CHECK_INDEX = np.rint(CHECK_TS / T_CROSS * (CROSS_TS.size - 1)).astype(int)


def crossing_problem(dtype=jnp.float64):
    x = jnp.linspace(-1.0, 1.0, 6, dtype=dtype)[:, None]
    y = jnp.abs(x) + 0.5 * x
    model = gf.ShallowReLU(1, 3, key=jax.random.key(1), dtype=dtype)
    return model, gf.EmpiricalRisk(x, y)


def _integrate_crossing(model, risk, t1, dynamics=PIECEWISE):
    """`dynamics` with the fixture's save layout (one compilation per dynamics)."""
    ts = np.linspace(0.0, t1, CROSS_TS.size)
    return gf.integrate(model, risk, t1, dynamics, save_ts=ts, save_path=True, limits=None)


@pytest.fixture(scope="module")
def crossing():
    model, risk = crossing_problem()
    return model, risk, _integrate_crossing(model, risk, T_CROSS)


@pytest.fixture(scope="module")
def crossing_tail():
    """The crossing problem with the exponential tail from the 8th step (`FORCED`)."""
    model, risk = crossing_problem()
    return model, risk, _integrate_crossing(model, risk, T_CROSS, FORCED)


def _flat(path):
    return np.asarray(jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(path))


def _plain_reference(model, risk, t1):
    """Plain Tsit5 on ``−G`` (``G`` = ``jax.grad`` of the risk: relu'(0) = 0, what
    ``GradientFlow(tail="explicit")`` integrates) at rtol 1e-12, dense: exact but slow at
    kinks. Returns ``(at, num_rejected)``; ``at(ts)`` gives ``θ(ts)`` ``(len(ts), p)``,
    the switching functions ``(len(ts), n·s)`` and the risk ``(len(ts),)``."""
    params, static = partition(model)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def field(t, u, args):
        return -jax.grad(lambda p: risk(eqx.combine(unravel(p), static)))(u)

    sol = jax.jit(
        lambda u0: diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            u0,
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-15),
            saveat=diffrax.SaveAt(dense=True),
            max_steps=200000,
        )  # fmt: skip
    )(flat)

    @eqx.filter_jit
    def evaluate(sol, ts):
        def one(t):
            u = sol.evaluate(t)
            m = eqx.combine(unravel(u), static)
            return u, m.switching_functions(risk.x).reshape(-1), risk(m)

        return jax.vmap(one)(ts)

    def at(ts):
        return tuple(np.asarray(a) for a in evaluate(sol, jnp.asarray(ts)))

    return at, int(sol.stats["num_rejected_steps"])


@pytest.fixture(scope="module")
def crossing_reference(crossing):
    model, risk, _ = crossing
    return _plain_reference(model, risk, T_CROSS)


@pytest.mark.parametrize("tail", [False, True], ids=["explicit", "tail"])
def test_agrees_with_tight_plain_solver_off_sliding(
    tail, crossing, crossing_tail, crossing_reference
):
    _, risk, traj = crossing_tail if tail else crossing
    at, rejected = crossing_reference
    assert int(traj.kinks.num_slides) == 0 and int(traj.kinks.num_crossings) >= 2
    theta_ref, _, risk_ref = at(CHECK_TS)
    np.testing.assert_allclose(_flat(traj.path)[CHECK_INDEX], theta_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.asarray(traj.risk)[CHECK_INDEX], risk_ref, rtol=1e-8)
    # the plain solver pays rejections at every crossing
    assert int(traj.num_rejected) <= rejected


def _first_crossing(at, after=0.0):
    """``(t_ref, flips, first)``: the first crossing time after `after` of the reference
    `at` (bisection on its switching functions along its dense output), the sign flips
    between the points of a grid of 3 001 on ``[0, 3]`` and the grid interval of that
    crossing."""

    def switching(ts):
        return at(ts)[1]

    grid = np.linspace(0.0, T_CROSS, 3001)
    signs = np.sign(switching(grid))
    flips = signs[1:] != signs[:-1]
    first = int(np.flatnonzero(flips.any(axis=1) & (grid[:-1] >= after))[0])
    k = int(np.flatnonzero(flips[first])[0])
    lo, hi = grid[first], grid[first + 1]
    for _ in range(12):  # 9 sub-intervals per round: 9^-12 of the grid step
        mids = np.linspace(lo, hi, 10)
        side = np.sign(switching(mids)[:, k]) == signs[first, k]
        j = int(np.argmin(side))  # first midpoint past the crossing
        lo, hi = mids[j - 1], mids[j]
    return 0.5 * (lo + hi), flips, first


@pytest.mark.parametrize("tail", [False, True], ids=["explicit", "tail"])
def test_crossing_times_agree_with_bisection_on_dense_reference(
    tail, crossing, crossing_tail, crossing_reference
):
    """Every crossing of the tight plain reference (bisection on its switching functions
    along its dense output) is a crossing of the piecewise flow: the count up to t = 3
    agrees, and a horizon 1e-8 before the first crossing has none, 1e-8 after it one.
    With the tail from the 8th step (`FORCED`) the crossings after the switch fall inside
    exponential steps, which end there (located on their dense output) instead of
    jumping across: checked on the first of them."""
    model, risk, traj = crossing_tail if tail else crossing
    dynamics = FORCED if tail else PIECEWISE
    at, _ = crossing_reference
    t_ref, flips, first = _first_crossing(at, float(traj.t_tail) if tail else 0.0)
    assert int(flips.sum()) == int(traj.kinks.num_crossings) >= 2
    if tail:
        assert float(traj.t_tail) < t_ref and int(traj.num_tail_steps) > 0

    def crossings(t1):
        return int(_integrate_crossing(model, risk, t1, dynamics).kinks.num_crossings)

    before = int(flips[:first].sum())
    assert crossings(t_ref - 1e-8) == before
    assert crossings(t_ref + 1e-8) == before + int(flips[first].sum())


@pytest.mark.parametrize("tail", [False, True], ids=["explicit", "tail"])
def test_energy_identity_through_crossings(tail, crossing, crossing_tail):
    _, risk, traj = crossing_tail if tail else crossing
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
    g_integral = 0.5 * (g[1:] ** 2 + g[:-1] ** 2) * np.diff(CROSS_TS)
    np.testing.assert_allclose(np.sum(g_integral[smooth]), drop, rtol=1e-4)  # trapezoid: O(Δt²)


def test_tail_agrees_with_tight_reference_near_a_minimum(crossing):
    """Another initialisation (key 0) of the crossing problem's network crosses twice,
    never slides, and converges to a zero of the risk inside one pattern; with the
    default threshold it switches to the exponential tail at t ≈ 125 (risk ≈ 1e-6). Path
    and risk agree with the tight plain reference (no sliding: the same solution) up to
    t = 200 (risk ≈ 1e-10), before and after the switch."""
    _, risk, _ = crossing
    model = gf.ShallowReLU(1, 3, key=jax.random.key(0))
    t1 = 200.0
    traj = _integrate_crossing(model, risk, t1, STIFF)
    assert 100 < float(traj.t_tail) < 150 and int(traj.num_tail_steps) > 0
    assert int(traj.kinks.num_crossings) >= 2 and int(traj.kinks.num_slides) == 0
    at, _ = _plain_reference(model, risk, t1)
    ts = np.array([0.0, 50.0, 100.0, 125.0, 150.0, 175.0, 200.0])
    index = np.rint(ts / t1 * (CROSS_TS.size - 1)).astype(int)
    theta_ref, _, risk_ref = at(ts)
    assert risk_ref[-1] < 1e-9
    np.testing.assert_allclose(_flat(traj.path)[index], theta_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(traj.risk)[index], risk_ref, rtol=1e-7)


def test_a_dead_unit_on_a_surface_stays_dead_in_the_tail():
    """A width-3 network (key 0) on 6 points of [0, 1], target 2x + 1, with unit 2 dead
    and its kink on the data point x = 0 (``w = −1, b = 0``: ``s = −x ≤ 0``, ``= 0``
    exactly at x = 0). On the off side its field is exactly 0, so the flow keeps it
    dead: the explicit steps do (exact zeros), and so must the exponential tail, whose
    linear algebra (``eigh`` of a Hessian with flat directions) mixes coordinates at
    rounding level: a rounding-size ``s > 0`` is not a crossing. (Before the event
    threshold had a rounding margin, the tail "crossed" there, the repelling on-side
    field took over and the unit came alive: ``b`` reached 0.57.)"""
    x = jnp.linspace(0.0, 1.0, 6)[:, None]
    risk = gf.EmpiricalRisk(x, 2 * x + 1)
    model = gf.ShallowReLU(1, 3, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: (m.w, m.b), model,
                        (model.w.at[2, 0].set(-1.0), model.b.at[2].set(0.0)))  # fmt: skip
    assert float(model.switching_functions(risk.x)[0, 2]) == 0.0
    t1 = 50.0
    explicit = _integrate_crossing(model, risk, t1)
    tail = _integrate_crossing(model, risk, t1, FORCED)
    assert int(tail.num_tail_steps) > 1000
    assert np.all(np.asarray(explicit.path.b[:, 2]) == 0.0)
    assert np.all(np.asarray(explicit.path.w[:, 2, 0]) == -1.0)
    assert np.max(np.abs(np.asarray(tail.path.b[:, 2]))) < 1e-15
    np.testing.assert_allclose(np.asarray(tail.path.w[:, 2, 0]), -1.0, rtol=0, atol=1e-15)
    assert int(tail.kinks.num_crossings) == int(explicit.kinks.num_crossings)
    assert int(tail.kinks.num_slides) == int(explicit.kinks.num_slides)
    np.testing.assert_allclose(_flat(tail.path), _flat(explicit.path), rtol=0, atol=1e-8)


def test_ensemble_equals_per_member(crossing):
    """`run_ensemble` (pools of 4 refilled from a queue, 16-step segments, one pool per
    phase) gives each member exactly its `integrate` solve. With a low stiffness
    threshold (0.1, checked every 8 steps: `FORCED`'s compiled program, the threshold is
    a value) the members switch to the tail at different check points, one never."""
    _, risk, _ = crossing
    keys = jax.random.split(jax.random.key(3), 5)
    mixed = eqx.tree_at(lambda d: d.stiffness_threshold, FORCED, 0.1)

    def init(key):
        return gf.ShallowReLU(1, 3, key=key)

    ens = gf.run_ensemble(init, risk, keys, T_CROSS, mixed, save_ts=CROSS_TS, limits=None,
                          chunk_size=4, segment_steps=16)  # fmt: skip
    t_tail = np.asarray(ens.t_tail)
    assert np.sum(np.isfinite(t_tail)) >= 3 and np.sum(np.isinf(t_tail)) >= 1
    assert len(np.unique(t_tail)) == len(keys)
    for i in range(len(keys)):
        traj = _integrate_crossing(init(keys[i]), risk, T_CROSS, mixed)
        flat = jax.flatten_util.ravel_pytree(partition(traj.model)[0])[0]
        assert int(ens.num_steps[i]) == int(traj.num_steps)
        assert int(ens.num_tail_steps[i]) == int(traj.num_tail_steps)
        np.testing.assert_allclose(ens.final_params[i], flat, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ens.risk[i], traj.risk, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Implicit networks z = relu(γAz + Wx): the pattern-frozen equilibrium is linear per point
# --------------------------------------------------------------------------------------


def implicit_problem():
    """6 points on the unit sphere of R³, target sin(2x₁), width 6, γ = 0.5 (spectral
    init), weights ½. Key 1 crosses twice before t = 1, then slides on one surface from
    t ≈ 1.5 on (found by running it; asserted below)."""
    x = jax.random.normal(jax.random.key(5), (6, 3))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    risk = gf.EmpiricalRisk(x, jnp.sin(2 * x[:, :1]), weights=jnp.full((6,), 0.5))
    model = gf.ImplicitReLU(3, 6, gamma=0.5, key=jax.random.key(1), init="spectral")
    return model, risk


IMPLICIT_TS = np.linspace(0.0, 8.0, 1601)


@pytest.fixture(scope="module")
def implicit_flow():
    model, risk = implicit_problem()
    traj = gf.integrate(model, risk, 8.0, FORCED, save_ts=IMPLICIT_TS, save_path=True)
    return model, risk, traj


@pytest.mark.parametrize("input_map", ["linear", "relu"])
def test_implicit_pattern_forward_is_the_equilibrium(input_map):
    """On its own pattern the frozen-pattern solve gives the model's outputs and switching
    functions (the model's are Picard iterates, to its tolerance 1e-10)."""
    from gflow_jax.risks._kinks import pattern_switching_functions

    model = gf.ImplicitReLU(3, 6, gamma=0.9, key=jax.random.key(1), init="spectral",
                            input_map=input_map, use_bias=True)  # fmt: skip
    x = jax.random.normal(jax.random.key(2), (5, 3))
    s = model.switching_functions(x)
    assert s.shape == (5, 6 if input_map == "linear" else 12)
    mask = (s > 0).astype(x.dtype)
    np.testing.assert_allclose(masked_outputs(model, x, mask), model(x), rtol=0, atol=1e-8)
    np.testing.assert_allclose(pattern_switching_functions(model, x, mask), s, rtol=0, atol=1e-8)


def test_implicit_jump_is_the_signal_over_one_minus_the_self_feedback():
    """On a surface ``p_ik = 0`` the one-sided gradients of ``L_P`` differ by ``μ ∇p_ik``
    (``∇p`` with unit k off at x_i), ``μ = δ_ik / (1 − β)``, ``δ_ik = ∂L/∂z_k`` with k off
    and ``β = γ (A (I − γ D A)⁻¹)_kk`` (the derivation in docs/kinks.md); and
    ``_Kinks.jumps``, which measures ``μ`` from the two gradients, returns it."""
    from gflow_jax.dynamics.integrate import make_problem
    from gflow_jax.dynamics.piecewise import _Kinks

    model, risk = implicit_problem()
    params, static = partition(model)
    _, problem = make_problem(FORCED, jnp.float64, risk, static, 1.0, 4, None, False)
    kinks = _Kinks(problem, params)
    u = jax.flatten_util.ravel_pytree(params)[0]
    s0 = np.asarray(kinks.model(u).switching_functions(risk.x)).reshape(-1)
    k = int(np.argmin(np.abs(s0) + 1e3 * (s0 == 0)))  # the surface nearest θ₀
    pattern = jnp.asarray(s0 > 0).at[k].set(False)
    slots = jnp.array([k, -1, -1, -1])
    u = kinks.project(u, pattern, slots, iterations=8)  # onto p_k = 0, other signs kept
    mask = kinks.mask(pattern, slots)
    s = kinks.switch(u, mask)
    assert abs(float(s[k])) < 1e-13
    assert np.all(np.asarray(jnp.delete(s, k) > 0) == np.asarray(jnp.delete(pattern, k)))
    g0, delta = kinks.grad(u, mask)
    g1, _ = kinks.grad(u, mask.at[k].set(1.0))
    n = np.asarray(kinks.rows(u, mask, slots)[1][0])
    jump = np.asarray(g1 - g0)
    cosine = jump @ n / (np.linalg.norm(jump) * np.linalg.norm(n))
    assert abs(abs(cosine) - 1) < 1e-10 and np.linalg.norm(jump) > 1e-3
    # the closed form at point i for unit j
    i, j = divmod(k, 6)
    m = kinks.model(u)
    gA = np.asarray(m.gamma * m.A)
    d = np.asarray(mask.reshape(6, 6)[i])
    beta = (gA @ np.linalg.inv(np.eye(6) - d[:, None] * gA))[j, j]
    mu = float(delta[k]) / (1 - beta)
    assert abs(beta) > 1e-3  # the feedback matters here
    np.testing.assert_allclose(jump @ n / (n @ n), mu, rtol=1e-9)
    # the slot's one-sided rates (`_Kinks.info`): ṡ with the unit off, and the jump of ṡ
    num, d, _ = kinks.info(u, pattern, slots)
    np.testing.assert_allclose(float(num[0]), -float(n @ np.asarray(g0)), rtol=1e-9)
    np.testing.assert_allclose(float(d[0]), mu * float(n @ n), rtol=1e-9)


def test_implicit_flow_agrees_with_tight_plain_solver_before_sliding(implicit_flow):
    """Two crossings and no sliding up to t = 1: the path is the plain generalised-gradient
    flow's (rtol 1e-12, dense)."""
    model, risk, traj = implicit_flow
    early = gf.integrate(model, risk, 1.0, FORCED, save_ts=np.linspace(0.0, 1.0, 1601),
                         limits=None)  # fmt: skip
    assert int(early.kinks.num_crossings) == 2 and int(early.kinks.num_slides) == 0
    at, _ = _plain_reference(model, risk, 1.0)
    index = np.array([0, 50, 100, 150, 200])  # t = 0, 0.25, 0.5, 0.75, 1 on IMPLICIT_TS
    theta_ref, s_ref, risk_ref = at(IMPLICIT_TS[index])
    np.testing.assert_allclose(_flat(traj.path)[index], theta_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(traj.risk)[index], risk_ref, rtol=1e-8)
    signs = np.sign(s_ref)
    assert int(np.sum(signs[1:] != signs[:-1])) == 2


def test_implicit_flow_slides_with_the_energy_identity(implicit_flow):
    """From t ≈ 1.06 the flow slides on one surface to t = 8 (the plain solver chatters
    there): the surface's switching function stays 0 and ``L(θ₀) − L(θ_t) = ∫‖θ̇‖²``
    holds through the crossings and the sliding, to the O(Δt²) of the estimator on the
    save intervals without an event (an interval holding a jump of θ̇ costs O(Δt))."""
    model, risk, traj = implicit_flow
    stats = traj.kinks
    assert int(stats.num_crossings) == 2 and int(stats.num_slides) == 1
    assert int(stats.num_sliding) == 1 and 6.8 < float(stats.sliding_time) < 7.0
    assert float(traj.t_stop) == 8.0 and int(traj.num_tail_steps) > 0
    static = partition(model)[1]
    switching = jax.vmap(lambda p: eqx.combine(p, static).switching_functions(risk.x))
    s = np.asarray(switching(traj.path)).reshape(len(IMPLICIT_TS), -1)
    on_surface = np.abs(s[-1]) < 1e-9
    assert on_surface.sum() == 1
    sliding = IMPLICIT_TS > 8.0 - float(stats.sliding_time) + 1e-3
    assert np.max(np.abs(s[sliding][:, on_surface])) < 1e-9
    sign = np.where(np.abs(s) < 1e-9, 0, np.sign(s))
    event = np.any(sign[1:] != sign[:-1], axis=1)
    assert event.sum() == 3  # two crossings, the sliding onset
    drop, kinetic = _energy_terms(traj, risk, ~event)
    np.testing.assert_allclose(kinetic, drop, rtol=2e-5)
    assert drop > 0.98 * float(traj.risk[0] - traj.risk[-1])


def test_scaled_switching_functions():
    """Shallow: ``s_ij / ‖(w_j, b_j)‖`` (the rescaling-invariant distance); implicit: the
    frozen-pattern switching functions unscaled (the model's own on its pattern)."""
    from gflow_jax.risks._kinks import scaled_switching_functions

    x = jax.random.normal(jax.random.key(2), (5, 3))
    shallow = gf.ShallowReLU(3, 4, key=jax.random.key(0))
    s = shallow.switching_functions(x)
    scale = jnp.sqrt(jnp.sum(shallow.w**2, axis=1) + shallow.b**2)
    mask = (s > 0).astype(x.dtype)
    np.testing.assert_allclose(scaled_switching_functions(shallow, x, mask), s / scale,
                               rtol=1e-14)  # fmt: skip
    model, _ = implicit_problem()
    s = model.switching_functions(x)
    got = scaled_switching_functions(model, x, (s > 0).astype(x.dtype))
    np.testing.assert_allclose(got, s, rtol=0, atol=1e-8)


def test_implicit_limit_analysis(implicit_flow):
    """The limit analysis of an implicit network's kink-aware trajectory works inside the
    final pattern (it called the shallow networks' `switching_scales`, which an implicit
    network does not have): the kink margin of the refined point is ``inf`` (in the
    closure of the final pattern's region) or ``0``, and the final pattern is that of the
    final parameters up to the sliding surfaces."""
    model, risk, traj = implicit_flow
    margin = float(traj.limit.limit_kink_margin)
    if int(traj.kinks.num_sliding) > 0:  # the plain risk and its raw margin
        assert 0.0 <= margin < np.inf
    else:
        assert margin == np.inf or margin == 0.0
    s = np.asarray(traj.model.switching_functions(risk.x))
    off_surface = np.abs(s) > 1e-8
    np.testing.assert_array_equal(np.asarray(traj.kinks.pattern)[off_surface],
                                  (s > 0)[off_surface])  # fmt: skip


def test_more_sliding_surfaces_than_slots_is_a_failure_not_a_spent_budget():
    """Two copies of the sliding neuron (output weights ½ each, biases −1.8 and −1.85)
    reach their kinks of x₁ = 1 one after the other and slide on both. With two slots
    the flow slides on both to t1; with one, the second surface is crossed for want of
    a slot, met again at the next event (it attracts from both sides), and the member
    stops at once as SOLVER_FAILED with verdict MAX_SLIDING instead of chattering
    through its step budget (UNFINISHED, MAX_STEPS)."""
    model = gf.ShallowReLU.from_flat(jnp.array([1.6, 1.6, -1.8, -1.85, 0.5, 0.5, 0.0]), 1, 2,
                                     frozen=("v", "c"))  # fmt: skip
    risk = sliding_problem()[1]
    outcomes = {}
    for slots in (2, 1):
        dynamics = gf.PiecewiseGradientFlow(rtol=1e-10, atol=1e-12, max_sliding=slots,
                                            max_steps=5000)  # fmt: skip
        traj = gf.integrate(model, risk, 20.0, dynamics, n_save=8, limits=None, throw=False)
        outcomes[slots] = traj
    both = outcomes[2]
    assert both.outcome_name == "UNFINISHED" and float(both.t_stop) == 20.0
    assert int(both.kinks.num_sliding) == 2 and int(both.kinks.num_crossings) == 0
    assert int(both.num_steps) < 200
    one = outcomes[1]
    assert one.outcome_name == "SOLVER_FAILED"
    assert gf.SolverVerdict(int(one.verdict)) == gf.SolverVerdict.MAX_SLIDING
    assert int(one.num_steps) < 50 and float(one.t_stop) < 1.0
    assert int(one.kinks.num_sliding) == 1 and int(one.kinks.num_crossings) == 2
    with pytest.raises(RuntimeError, match=r"MAX_SLIDING.*max_sliding"):
        gf.integrate(model, risk, 20.0, dynamics, n_save=8, limits=None)


def test_implicit_junction_of_three_surfaces_of_one_point_does_not_chatter():
    """Member 4 of the implicit-width study's `laptop` cell N = 8, m = 4, γ = 0.5 slides on
    two surfaces (units 0 of point 0 and 3 of point 1) and meets a third (unit 1 of
    point 1). Two units of one point feed back on each other through the equilibrium,
    so their jumps are not additive: the additive weights called the third surface
    crossable from both sides (α = 1.0001 with the unit off, the on side pushing back),
    and the flow crossed it back and forth at steps of 1e-10 (3 000 steps at
    t = 2.357, the study's budget of 200 000 spent). Tested on its own one-sided fields
    it is consistent, and the member reaches a critical point of the Filippov flow
    (the velocity on its last sliding surface vanishes) in ~130 steps, with the risk
    0.4989704245 of the tight-tolerance flow. When ‖θ̇‖² falls below grad_tol·L = 1e-20·L
    depends on the tail steps (t = 37.6 here, 41.5 at rtol 1e-9, 54 with the order-3
    tail step used before)."""
    from gflow_jax.experiments.implicit_width import PRESETS, make_data

    config = PRESETS["laptop"]
    x, y = make_data(8, config.d_in, jax.random.fold_in(jax.random.key(config.data_seed), 8))
    risk = gf.EmpiricalRisk(x, y, weights=jnp.full((8,), 0.5))
    key = jax.random.split(jax.random.key(config.seed), config.seeds)[4]
    model = gf.ImplicitReLU(config.d_in, 4, gamma=0.5, key=key, init=config.init,
                            margin=config.margin)  # fmt: skip
    stop = gf.Stop(risk_tol=config.risk_tol, grad_tol=config.grad_tol)
    dynamics = gf.PiecewiseGradientFlow(rtol=config.rtol, atol=config.atol, stop=stop,
                                        max_steps=3000)  # fmt: skip
    traj = gf.integrate(model, risk, config.t1, dynamics, n_save=8, limits=None)
    assert int(traj.num_steps) < 300 and int(traj.kinks.num_crossings) < 30
    assert int(traj.kinks.num_slides) >= 3
    assert traj.outcome_name == "CRITICAL_POINT" and 30 < float(traj.t_stop) < 70
    np.testing.assert_allclose(float(traj.final_risk), 0.4989704245124, rtol=1e-10)


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
    """With the exponential tail from the 8th step (`FORCED`): its steps use the Hessian
    of the deep network's pattern-frozen risk and stop at the crossings."""
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    risk = gf.EmpiricalRisk(x, jnp.abs(x))
    model = gf.DeepMLP((1, 3, 3, 1), "relu", key=jax.random.key(3), init="he")
    model = eqx.tree_at(lambda m: m.biases, model, (jnp.full(3, 0.1), jnp.full(3, 0.1)))
    ts = np.array([0.0, 0.5, 1.0, 2.0])
    traj = gf.integrate(model, risk, 2.0, FORCED, save_ts=ts, save_path=True, limits=None)
    assert int(traj.kinks.num_slides) == 0 and int(traj.kinks.num_crossings) >= 2
    assert int(traj.num_tail_steps) > 0
    at, _ = _plain_reference(model, risk, 2.0)
    theta_ref, s_ref, risk_ref = at(ts)
    np.testing.assert_allclose(_flat(traj.path), theta_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(traj.risk, risk_ref, rtol=1e-8)
    # the reference crosses as often (sign flips between the save times)
    signs = np.sign(s_ref)
    assert int(np.sum(signs[1:] != signs[:-1])) >= 2


def test_float32_runs():
    """Float32 tolerances, the tail from the 8th step."""
    model, risk = crossing_problem(jnp.float32)
    dynamics = gf.PiecewiseGradientFlow(stiffness_threshold=1e-12, stiffness_check_steps=8)
    traj = gf.integrate(model, risk, T_CROSS, dynamics, save_ts=CHECK_TS, limits=None)
    assert int(traj.num_tail_steps) > 0
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


def test_default_dynamics_is_piecewise_exactly_where_it_applies():
    from gflow_jax.dynamics.integrate import make_problem

    def chosen(model, risk):
        _, static = partition(model)
        dynamics, _ = make_problem(None, jnp.float64, risk, static, 1.0, 4, None, False)
        return type(dynamics)

    model, risk = crossing_problem()
    key = jax.random.key(0)
    population = gf.PopulationRisk.uniform_1d(gf.Affine(2.0, 1.0), 0.0, 1.0)
    implicit = gf.ImplicitReLU(1, 3, gamma=0.5, init="spectral", key=key)
    assert chosen(model, risk) is gf.PiecewiseGradientFlow
    assert chosen(gf.DeepMLP((1, 3, 3, 1), "relu", key=key), risk) is gf.PiecewiseGradientFlow
    assert chosen(gf.DeepMLP((1, 3, 1), "tanh", key=key), risk) is gf.GradientFlow
    assert chosen(model, population) is gf.GradientFlow  # exact risk: smooth enough
    assert chosen(implicit, risk) is gf.PiecewiseGradientFlow
    # the old behaviour stays selectable: an explicit GradientFlow is used as given
    dynamics, _ = make_problem(gf.GradientFlow(), jnp.float64, risk, partition(model)[1], 1.0,
                               4, None, False)  # fmt: skip
    assert type(dynamics) is gf.GradientFlow


def test_quadrature_population_risk_is_the_weighted_sum_over_its_nodes():
    # a quadrature PopulationRisk is Σ_k ω_k ‖N(x_k) − f(x_k)‖²: the kink-aware flow of it
    # is the flow of the EmpiricalRisk with its nodes, targets and weights
    model, _ = crossing_problem()
    quadrature = gf.PopulationRisk(lambda x: jnp.abs(x[:, 0]) + 0.5 * x[:, 0],
                                   gf.Uniform(-1.0, 1.0, 1), 8)  # fmt: skip
    same = gf.EmpiricalRisk(quadrature.x, quadrature.y, weights=quadrature.weights)
    assert applies(model, quadrature)
    a = _integrate_crossing(model, quadrature, T_CROSS)
    b = _integrate_crossing(model, same, T_CROSS)
    assert int(a.kinks.num_crossings) >= 1  # the flow crossed kinks at the nodes
    assert int(a.kinks.num_crossings) == int(b.kinks.num_crossings)
    assert int(a.num_steps) == int(b.num_steps)
    np.testing.assert_allclose(_flat_path(a), _flat_path(b), rtol=1e-12, atol=1e-14)
    # the default dynamics of a quadrature risk stays GradientFlow (see default_dynamics)
    from gflow_jax.dynamics.integrate import default_dynamics

    assert type(default_dynamics(model, quadrature)) is gf.GradientFlow


def test_one_point_rows_and_vertex_test_equal_the_whole_network_ones():
    """`_Kinks.rows` and the implicit vertex test of `_Kinks.info` differentiate one point's
    forward pass only; they equal the same quantities computed through the whole network
    (the Jacobian of all switching functions, the full frozen-pattern gradients) with two
    sliding surfaces on one point and one on another."""
    from gflow_jax.dynamics.integrate import make_problem
    from gflow_jax.dynamics.piecewise import _Kinks

    model, risk = implicit_problem()
    params, static = partition(model)
    _, problem = make_problem(FORCED, jnp.float64, risk, static, 1.0, 4, None, False)
    kinks = _Kinks(problem, params)
    u = jax.flatten_util.ravel_pytree(params)[0]
    s0 = np.asarray(kinks.model(u).switching_functions(risk.x))
    n_sw = s0.shape[1]
    slots = jnp.array([1 * n_sw + 0, 1 * n_sw + 2, 3 * n_sw + 4, -1])
    pattern = jnp.asarray(s0.reshape(-1) > 0)
    mask = kinks.mask(pattern, slots)
    values, rows = kinks.rows(u, mask, slots)
    jac = np.asarray(jax.jacrev(lambda u: kinks.switch(u, mask))(u))
    s = np.asarray(kinks.switch(u, mask))
    idx = np.asarray(slots[:3])
    np.testing.assert_allclose(np.asarray(rows[:3]), jac[idx], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(values[:3]), s[idx], rtol=1e-12)
    assert not np.any(np.asarray(rows[3])) and float(values[3]) == 0.0

    # the vertex test through the whole network
    f = -np.asarray(kinks.grad(u, mask)[0])

    def normal(J, v):
        G = J @ J.T
        keep = np.linalg.norm(J, axis=1) > 0
        Jk = J[keep]
        return Jk.T @ np.linalg.solve(G[np.ix_(keep, keep)], Jk @ v)

    num, d, _ = kinks.info(u, pattern, slots)
    for index in range(3):
        k = int(slots[index])
        on = mask.at[k].set(1.0)
        others = [int(o) for o in np.asarray(slots) if o >= 0 and o != k]
        J_off = jac[others]
        J_on = np.asarray(jax.jacrev(kinks.switch)(u, on))[others]
        f_on = -np.asarray(kinks.grad(u, on)[0])
        n = jac[k]
        rate_off = n @ (f - normal(J_off, f))
        rate_on = n @ (f_on - normal(J_on, f_on))
        np.testing.assert_allclose(float(num[index]), rate_off, rtol=1e-9)
        np.testing.assert_allclose(float(d[index]), rate_off - rate_on, rtol=1e-9)
    assert float(num[3]) == 0.0 and float(d[3]) == 0.0
