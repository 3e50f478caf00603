"""Outcomes: the priority rules of ``classify`` and every way a gradient flow can end, each
checked against a value known in closed form."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import BlowUp, Quadratic, Scalar
from toys import flow as gradient_flow

from gflow_jax._defaults import defaults
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.outcomes import Outcome, SolverVerdict, Stop, classify
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.targets import Affine, sample_data

ALPHA, BETA, N = 1.0, 0.5, 21
# Empirical measure on the N-point grid of [0, 1]: the best constant fit of αx + β has
# risk α² Var_N(x) = α² (N + 1) / (12 (N − 1)) (→ α²/12 as N → ∞: the dead-neuron
# critical value of Jentzen & Riekert, arXiv 2107.04479).
CONSTANT_FIT_RISK = ALPHA**2 * (N + 1) / (12 * (N - 1))


def _relu1(w, b, v, c):
    m = ShallowReLU(1, 1, key=jax.random.key(0))
    return eqx.tree_at(
        lambda m: (m.w, m.b, m.v, m.c),
        m,
        (jnp.array([[w]]), jnp.array([b]), jnp.array([[v]]), jnp.array([c])),
    )


@pytest.fixture(scope="module")
def affine():
    x, y = sample_data(Affine(ALPHA, BETA), N)
    return x, y, EmpiricalRisk(x, y)


# -- classify: priorities ---------------------------------------------------------------------

STOP = Stop(risk_tol=1e-3, grad_tol=1e-6, bound=10.0)
U, C, CP, D, ILL = (
    Outcome.UNFINISHED,
    Outcome.CONVERGED,
    Outcome.CRITICAL_POINT,
    Outcome.DIVERGED,
    Outcome.ILL_POSED,
)

CASES = [
    # risk, grad_sq, norm, well_posed → code
    (1.0, 1.0, 1.0, True, U),
    (1e-3, 1.0, 1.0, True, C),  # L ≤ risk_tol (inclusive)
    (1.1e-3, 1.0, 1.0, True, U),
    (1.0, 1e-6, 1.0, True, CP),  # g ≤ grad_tol·L = 1e-6 (inclusive)
    (1.0, 1.1e-6, 1.0, True, U),
    (100.0, 9e-5, 1.0, True, CP),  # relative to L: 9e-5 ≤ 1e-6·100
    (1e-2, 9e-5, 1.0, True, U),  # a fast-converging tail is not a critical point
    (0.0, 0.0, 1.0, True, C),  # CONVERGED > CRITICAL_POINT
    (0.0, 0.0, 10.0, True, D),  # ‖θ‖ ≥ bound: DIVERGED > CONVERGED
    (1.0, 0.0, 9.99, True, CP),
    (np.nan, 0.0, 1.0, True, D),  # non-finite anything: DIVERGED
    (0.0, np.inf, 1.0, True, D),
    (0.0, 0.0, np.nan, True, D),
    (0.0, 0.0, 1.0, False, ILL),  # ILL_POSED > CONVERGED
    (np.nan, np.nan, np.inf, False, ILL),  # ILL_POSED > DIVERGED
    (1.0, 1.0, 1.0, False, ILL),
]


@pytest.mark.parametrize("risk, grad_sq, norm, ok, expected", CASES)
def test_classify_priorities(risk, grad_sq, norm, ok, expected):
    code = classify(risk, grad_sq, norm, ok, STOP)
    assert code.dtype == jnp.int8
    assert int(code) == expected


def test_classify_vectorised_and_jitted():
    r, g, n, ok, expected = (np.array(col) for col in zip(*CASES, strict=True))
    codes = jax.jit(jax.vmap(lambda *a: classify(*a, STOP)))(r, g, n, ok)
    np.testing.assert_array_equal(codes, expected)
    assert [Outcome(int(c)).name for c in codes[:3]] == ["UNFINISHED", "CONVERGED", "UNFINISHED"]


def test_stop_defaults_by_dtype():
    r64, g64 = defaults(jnp.float64).risk_tol, defaults(jnp.float64).grad_tol
    r32, g32 = defaults(jnp.float32).risk_tol, defaults(jnp.float32).grad_tol
    assert Stop().resolve(jnp.float64) == Stop(risk_tol=r64, grad_tol=g64, bound=1e6)
    assert Stop().resolve(jnp.float32) == Stop(risk_tol=r32, grad_tol=g32, bound=1e6)
    assert r64 <= r32 and g64 <= g32  # float32 cannot resolve what float64 can
    custom = Stop(risk_tol=0.5, bound=math.inf).resolve(jnp.float64)
    assert (custom.risk_tol, custom.grad_tol, custom.bound) == (0.5, g64, math.inf)
    assert Stop(grad_tol=1e-3).resolve(jnp.float32).grad_tol == 1e-3
    with pytest.raises(ValueError, match="resolve"):
        classify(1.0, 1.0, 1.0, True, Stop())
    assert [o.value for o in Outcome] == [0, 1, 2, 3, 4, 5]


# -- gradient-flow outcomes (one compiled flow serves the width-1 ReLU cases) ---------------------


def test_critical_point_at_start(affine):
    """All neurons dead and c at the mean of y: ∇L = 0 exactly, L = constant-fit risk."""
    x, y, risk = affine
    model = _relu1(1.0, -2.0, 0.7, float(jnp.mean(y)))  # w x + b < 0 on [0, 1]
    traj = gradient_flow(model, risk, 10.0)
    assert traj.outcome == Outcome.CRITICAL_POINT and traj.outcome_name == "CRITICAL_POINT"
    assert float(traj.final_risk) == pytest.approx(CONSTANT_FIT_RISK, rel=1e-13)
    assert float(traj.final_grad_norm) < 1e-15
    assert float(traj.t_stop) == 0.0 and int(traj.num_steps) == 0
    assert float(traj.risk[0]) == pytest.approx(CONSTANT_FIT_RISK, rel=1e-13)
    assert np.all(np.isnan(np.asarray(traj.risk[1:])))
    np.testing.assert_array_equal(traj.model.to_flat(), model.to_flat())


def test_converged_small_initial_risk(affine):
    """H = 1, small initial risk (Theorem C): the risk reaches risk_tol before t1."""
    x, y, risk = affine
    model = _relu1(1.0, 0.1, 0.9, 0.45)  # N(x) = 0.9 x + 0.54 on [0, 1]
    traj = gradient_flow(model, risk, 1e4)
    assert traj.outcome == Outcome.CONVERGED
    assert float(traj.final_risk) <= 1e-10 < 1e-3 < float(traj.initial_risk)
    assert 1.0 < float(traj.t_stop) < 1e4
    np.testing.assert_allclose(traj.model(x), y, atol=3e-5)  # RMS error ≤ 1e-5
    reached = np.asarray(traj.ts) <= float(traj.t_stop)
    risk_t = np.asarray(traj.risk)
    assert np.all(np.diff(risk_t[reached]) <= 0)
    assert np.all(np.isnan(risk_t[~reached]))


def test_unfinished_short_t1(affine):
    x, y, risk = affine
    traj = gradient_flow(_relu1(1.0, 0.1, 0.9, 0.45), risk, 0.5)
    assert traj.outcome == Outcome.UNFINISHED
    assert float(traj.t_stop) == 0.5 == float(traj.ts[-1])
    assert float(traj.final_risk) < float(traj.initial_risk)
    assert np.all(np.isfinite(np.asarray(traj.risk)))


def test_unfinished_max_steps_is_an_outcome_not_an_error(affine):
    x, y, risk = affine
    traj = gradient_flow(_relu1(1.0, 0.1, 0.9, 0.45), risk, 1e4, max_steps=5)
    assert traj.outcome == Outcome.UNFINISHED
    assert int(traj.num_steps) == 5
    assert 0.0 < float(traj.t_stop) < 1e4
    assert float(traj.final_risk) < float(traj.initial_risk)


def test_nan_initial_parameters_diverge(affine):
    x, y, risk = affine
    traj = gradient_flow(_relu1(np.nan, 0.1, 0.9, 0.45), risk, 10.0)
    assert traj.outcome == Outcome.DIVERGED
    assert float(traj.t_stop) == 0.0 and int(traj.num_steps) == 0
    assert np.isnan(float(traj.initial_risk))


def test_critical_point_approached(affine):
    """A dead neuron: only c moves, c(t) − ȳ = (c0 − ȳ) e^{−2t}, L → the constant-fit risk
    L* > 0. The rule ‖∇L‖² ≤ grad_tol·L, with ‖∇L‖ = 2|c − ȳ|, fires at t_hit below."""
    x, y, risk = affine
    c0, ybar = 3.0, float(jnp.mean(y))
    traj = gradient_flow(_relu1(1.0, -2.0, 0.7, c0), risk, 1e3)
    assert traj.outcome == Outcome.CRITICAL_POINT
    grad_tol = Stop().resolve(jnp.float64).grad_tol
    gap = float(traj.final_grad_norm) / 2  # |c − ȳ| at t_stop
    assert float(traj.final_grad_norm) ** 2 <= grad_tol * float(traj.final_risk)
    assert abs(float(traj.model.c[0]) - ybar) == pytest.approx(gap, rel=1e-9)
    # L = L* + (c − ȳ)² exactly (the neuron is dead on the data)
    assert float(traj.final_risk) == pytest.approx(CONSTANT_FIT_RISK + gap**2, rel=1e-12)
    t_hit = math.log(2 * abs(c0 - ybar) / math.sqrt(grad_tol * CONSTANT_FIT_RISK)) / 2
    assert t_hit * (1 - 1e-6) <= float(traj.t_stop) < t_hit + 1.0
    assert float(traj.model.w[0, 0]) == 1.0 and float(traj.model.b[0]) == -2.0


# -- divergence and ill-posedness --------------------------------------------------------------


def test_diverged_finite_time_blow_up():
    """θ' = 4θ³, θ0 = 1: θ(t) = (1 − 8t)^{−1/2} crosses the bound 10 at t = 0.99/8."""
    traj = gradient_flow(Scalar(jnp.array([1.0])), BlowUp(), 1.0, stop=Stop(bound=10.0))
    assert traj.outcome == Outcome.DIVERGED
    t_cross, t_blow = 0.99 / 8, 1 / 8
    assert t_cross <= float(traj.t_stop) < t_blow
    theta = float(traj.model.theta[0])
    assert theta >= 10.0
    # the stopping state is on the exact solution at t_stop (error amplified near t*)
    assert theta == pytest.approx((1 - 8 * float(traj.t_stop)) ** -0.5, rel=1e-4)
    assert float(traj.final_risk) > 0


def test_ill_posed_at_start_and_priority_over_nan():
    m = Scalar(jnp.array([2.0]), limit=0.5)
    traj = gradient_flow(m, Quadratic(), 1.0, save_path=True)
    assert traj.outcome == Outcome.ILL_POSED and float(traj.t_stop) == 0.0
    # stopped before any step: the save time 0 still holds θ0 and L(θ0) = 1
    assert float(traj.risk[0]) == 1.0 and float(traj.path.theta[0, 0]) == 2.0
    assert np.all(np.isnan(np.asarray(traj.path.theta[1:])))
    m_nan = Scalar(jnp.array([np.nan]), limit=0.5)  # also DIVERGED, but ILL_POSED wins
    assert gradient_flow(m_nan, Quadratic(), 1.0, save_path=True).outcome == Outcome.ILL_POSED


def test_ill_posed_detected_along_the_flow():
    """θ(t) = 1 − e^{−2t} leaves the well-posed set {θ < 1/2} at t = ln 2 / 2."""
    m = Scalar(jnp.array([0.0]), limit=0.5)
    traj = gradient_flow(m, Quadratic(), 10.0, save_path=True)  # shares the compiled solve
    assert traj.outcome == Outcome.ILL_POSED
    t_cross = math.log(2) / 2
    assert t_cross <= float(traj.t_stop) < t_cross + 0.2
    theta = float(traj.model.theta[0])
    assert theta >= 0.5
    assert theta == pytest.approx(1 - math.exp(-2 * float(traj.t_stop)), rel=1e-7)


# -- solver failure ------------------------------------------------------------------------------


class Stiff(eqx.Module):
    """L(θ) = 100 (θ − 1)²: explicit steps need dt ≲ 0.02, forbidden by dtmin below."""

    def __call__(self, model):
        return 100 * jnp.sum((model.theta - 1.0) ** 2)


def test_solver_failure_raises_or_is_reported_with_its_reason():
    """A real solver failure (step size below dtmin) is an error with throw=True (naming
    the verdict, with a hint), and SOLVER_FAILED with verdict DT_MIN with throw=False —
    never UNFINISHED, which means the budget ran out."""
    ctrl = diffrax.PIDController(rtol=1e-12, atol=1e-14, dtmin=0.1, force_dtmin=False)
    model = Scalar(jnp.array([0.0]))
    traj = gradient_flow(model, Stiff(), 10.0, controller=ctrl, throw=False)
    assert traj.outcome == Outcome.SOLVER_FAILED
    assert traj.verdict == SolverVerdict.DT_MIN and traj.verdict_name == "DT_MIN"
    assert float(traj.t_stop) < 10.0
    with pytest.raises(RuntimeError, match=r"solver failed \(DT_MIN\).*Loosen the controller"):
        gradient_flow(model, Stiff(), 10.0, controller=ctrl)
    # a budget that runs out is UNFINISHED with verdict MAX_STEPS, not a failure
    spent = gradient_flow(model, Quadratic(), 10.0, max_steps=3, throw=False)
    assert spent.outcome == Outcome.UNFINISHED and spent.verdict == SolverVerdict.MAX_STEPS
