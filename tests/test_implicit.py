"""ImplicitReLU (Gao & Gao, arXiv:2205.07463): equilibrium, implicit gradients,
well-posedness, failures."""

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import flow as gradient_flow

from gflow_jax.certificates.wellposed import (
    inf_norm,
    power_iteration,
    spectral_norm_upper_bound,
    well_posedness,
)
from gflow_jax.models.activations import relu
from gflow_jax.models.base import partition
from gflow_jax.models.implicit import ImplicitReLU, solve_equilibrium
from gflow_jax.outcomes import Outcome, Stop
from gflow_jax.risks.empirical import EmpiricalRisk

D_IN, WIDTH, N = 3, 8, 5


def _data(n=N, d=D_IN, seed=2):
    x = jax.random.normal(jax.random.key(seed), (n, d))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jax.random.normal(jax.random.key(seed + 100), (n, 1))
    return x, y


def _model(gamma=0.6, seed=0, **kw):
    kw.setdefault("init", "spectral")  # gamma = gamma ||A(0)||_2 exactly
    return ImplicitReLU(D_IN, WIDTH, gamma=gamma, key=jax.random.key(seed), **kw)


def _loss(model, x, y):
    return 0.5 * jnp.sum((model(x) - y) ** 2)


def _pre_activations(model, x, z):
    return np.asarray(model.gamma * z @ model.A.T + model.injection(x))


# ----------------------------------------------------------------------------------
# Forward: the equilibrium
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("input_map", ["linear", "relu"])
def test_equilibrium_residual_and_picard_newton_agree(input_map):
    x, _ = _data()
    picard = _model(input_map=input_map)
    newton = _model(input_map=input_map, solver="newton")
    eq_p, eq_n = picard.equilibrium(x), newton.equilibrium(x)
    assert bool(eq_p.success) and bool(eq_n.success)
    # independent residual check in numpy: z = relu(gamma A z + phi)
    A, W = np.asarray(picard.A), np.asarray(picard.W)
    phi = np.asarray(x) @ W.T
    if input_map == "relu":
        phi = np.maximum(phi, 0)
    for eq in (eq_p, eq_n):
        z = np.asarray(eq.z)
        res = np.linalg.norm(z - np.maximum(picard.gamma * z @ A.T + phi, 0), axis=1)
        assert res.max() < 1e-9
        np.testing.assert_allclose(np.asarray(eq.residual), res, atol=1e-12)
    np.testing.assert_allclose(np.asarray(eq_n.z), np.asarray(eq_p.z), atol=1e-9)
    # Picard contracts at rate gamma ||A||_2 = 0.6: it needs tens of steps, Newton few
    assert int(eq_n.num_steps) < int(eq_p.num_steps) <= 60
    np.testing.assert_allclose(picard(x), np.asarray(eq_p.z) @ np.asarray(picard.u).T, atol=1e-12)


def test_solve_equilibrium_function_and_bias():
    x, _ = _data()
    model = _model(gamma=0.2, use_bias=True, init={"c": 1.0})
    z, steps, ok = solve_equilibrium(model.gamma * model.A, model.injection(x))
    assert bool(ok) and int(steps) > 0
    np.testing.assert_allclose(
        model(x), np.asarray(z) @ np.asarray(model.u).T + np.asarray(model.c), atol=1e-12
    )
    assert model.num_params == WIDTH * WIDTH + WIDTH * D_IN + WIDTH + 1


# ----------------------------------------------------------------------------------
# Gradients: implicit function theorem vs finite differences and unrolling
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("input_map", ["linear", "relu"])
def test_gradients_match_central_finite_differences(input_map):
    x, y = _data()
    model = _model(gamma=0.7, seed=1, input_map=input_map, rtol=1e-14, atol=1e-14, max_steps=5000)
    eq = model.equilibrium(x)
    # generic point: no pre-activation near a ReLU kink, so L is smooth here
    assert np.abs(_pre_activations(model, x, eq.z)).min() > 1e-4
    grads, gx = jax.grad(lambda m, xx: _loss(m, xx, y), argnums=(0, 1))(model, x)
    loss = jax.jit(lambda m, xx: _loss(m, xx, y))
    h = 1e-6
    key = jax.random.key(7)
    for name in ("A", "W", "u", "x"):
        for _ in range(2):
            key, sub = jax.random.split(key)
            if name == "x":
                v = jax.random.normal(sub, x.shape)
                plus, minus = loss(model, x + h * v), loss(model, x - h * v)
                analytic = jnp.sum(gx * v)
            else:
                base = getattr(model, name)
                v = jax.random.normal(sub, base.shape)
                at = lambda s, v=v, name=name, base=base: eqx.tree_at(
                    lambda m: getattr(m, name), model, base + s * v
                )
                plus, minus = loss(at(h), x), loss(at(-h), x)
                analytic = jnp.sum(getattr(grads, name) * v)
            fd = (plus - minus) / (2 * h)
            assert abs(float(fd - analytic)) <= 1e-6 * abs(float(analytic)), name


def test_implicit_gradient_equals_unrolled_picard():
    x, y = _data()
    model = _model(gamma=0.6, rtol=1e-14, atol=1e-14)

    def unrolled_loss(m):  # 300 Picard steps: 0.6^300 ~ 1e-67, fully converged
        phi = x @ m.W.T
        z = jax.lax.fori_loop(
            0, 300, lambda _, z: relu(m.gamma * z @ m.A.T + phi), jnp.zeros((N, WIDTH))
        )
        return 0.5 * jnp.sum((z @ m.u.T - y) ** 2)

    g_implicit = jax.grad(lambda m: _loss(m, x, y))(model)
    g_unrolled = jax.grad(unrolled_loss)(model)
    for name in ("A", "W", "u"):
        a, b = np.asarray(getattr(g_implicit, name)), np.asarray(getattr(g_unrolled, name))
        assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(b), name


def test_backward_formula_of_math_section_2_3():
    """dL/dA = γ μ z*ᵀ, dL/dφ = μ with (I − γAᵀD) λ = g, μ = Dλ (per input)."""
    x, y = _data()
    model = _model(gamma=0.6, rtol=1e-14, atol=1e-14)
    eq = model.equilibrium(x)
    z = np.asarray(eq.z)
    A, u, g_ = np.asarray(model.A), np.asarray(model.u), model.gamma
    resid = z @ u.T - np.asarray(y)
    dA = np.zeros_like(A)
    for i in range(N):
        D = np.diag((_pre_activations(model, x, eq.z)[i] > 0).astype(float))
        lam = np.linalg.solve(np.eye(WIDTH) - g_ * A.T @ D, u.T @ resid[i])
        dA += g_ * np.outer(D @ lam, z[i])
    grads = jax.grad(lambda m: _loss(m, x, y))(model)
    np.testing.assert_allclose(np.asarray(grads.A), dA, rtol=1e-9, atol=1e-13)


def test_forward_mode_and_hessian_vector_product():
    x, y = _data()
    model = _model(gamma=0.6, rtol=1e-14, atol=1e-14)
    f = lambda A: _loss(eqx.tree_at(lambda m: m.A, model, A), x, y)
    g = jax.grad(f)(model.A)
    v = jax.random.normal(jax.random.key(3), g.shape)
    _, jvp = jax.jvp(f, (model.A,), (v,))
    np.testing.assert_allclose(jvp, jnp.sum(g * v), rtol=1e-10)
    # HVP (forward over reverse) against central differences of the gradient
    _, hvp = jax.jvp(jax.grad(f), (model.A,), (v,))
    h = 1e-6
    fd = (jax.grad(f)(model.A + h * v) - jax.grad(f)(model.A - h * v)) / (2 * h)
    assert np.linalg.norm(hvp - fd) <= 1e-5 * np.linalg.norm(fd)


# ----------------------------------------------------------------------------------
# Well-posedness certificate
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [5, 30, 100])
def test_power_iteration_vs_numpy(m):
    rng = np.random.default_rng(m)
    A = rng.normal(size=(m, m)) / np.sqrt(m)
    true = np.linalg.norm(A, 2)
    sigma, v = power_iteration(jnp.asarray(A), iters=2000)
    assert float(sigma) <= true * (1 + 1e-12)  # always a lower bound
    np.testing.assert_allclose(float(sigma), true, rtol=1e-8)
    # warm start from the converged vector: already exact after one step
    np.testing.assert_allclose(float(power_iteration(A, iters=1, v0=v)[0]), true, rtol=1e-8)
    # the model's default (100 iterations) is within the default margin 0.02
    assert float(power_iteration(A, iters=100)[0]) >= 0.98 * true
    np.testing.assert_allclose(float(inf_norm(A)), np.linalg.norm(A, np.inf), rtol=1e-12)
    assert float(spectral_norm_upper_bound(A)) >= true * (1 - 1e-12)


def test_well_posed_and_report():
    x, _ = _data()
    model = _model(gamma=0.6)
    true = model.gamma * np.linalg.norm(np.asarray(model.A), 2)
    np.testing.assert_allclose(float(model.contraction()), true, rtol=1e-6)
    assert bool(model.well_posed())
    rep = jax.jit(well_posedness)(model, x)
    np.testing.assert_allclose(float(rep.contraction), 0.6, rtol=1e-6)
    assert float(rep.contraction_upper) >= 0.6 and float(rep.residual) < 1e-9
    assert bool(rep.success) and bool(rep.well_posed)
    # Picard error <= 0.6^k ||z*||: the step count is close to log(tol)/log(0.6)
    assert int(rep.num_steps) <= float(rep.predicted_steps) + 5
    assert "well posed: True" in rep.summary()
    with pytest.warns(UserWarning, match="margin"):
        near = _model(gamma=0.99)  # within the default margin 0.02
    assert not bool(near.well_posed())
    # a tiny gamma is certified rigorously by the l_inf / Frobenius bounds
    small = _model(gamma=0.05)
    assert bool(well_posedness(small).certified)


def test_bad_inputs_raise_and_warn():
    key = jax.random.key(0)
    for gamma in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="gamma"):
            ImplicitReLU(2, 4, gamma=gamma, key=key)
    with pytest.raises(TypeError, match="gamma"):
        ImplicitReLU(2, 4, gamma=True, key=key)
    with pytest.raises(ValueError, match="width"):
        ImplicitReLU(2, 0, gamma=0.1, key=key)
    with pytest.raises(ValueError, match="d_in"):
        ImplicitReLU(0, 4, gamma=0.1, key=key)
    with pytest.raises(ValueError, match="input_map"):
        ImplicitReLU(2, 4, gamma=0.1, key=key, input_map="tanh")
    with pytest.raises(ValueError, match="solver"):
        ImplicitReLU(2, 4, gamma=0.1, key=key, solver="anderson")
    with pytest.raises(ValueError, match="frozen names unknown fields"):
        ImplicitReLU(2, 4, gamma=0.1, key=key, frozen=("A", "c"))
    with pytest.raises(ValueError, match="init"):
        ImplicitReLU(2, 4, gamma=0.1, key=key, init="xavier")
    with pytest.raises(ValueError, match="shape"):
        ImplicitReLU(2, 4, gamma=0.1, key=key)(jnp.ones((3, 5)))
    # ||A(0)||_2 ~ 2 for the normal init: gamma = 1 gives gamma ||A(0)||_2 >= 1
    with pytest.warns(UserWarning, match="no or several solutions"):
        ImplicitReLU(2, 16, gamma=1.0, key=key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImplicitReLU(2, 16, gamma=0.2, key=key)


def test_frozen_fields():
    model = _model(frozen=("W", "A"))
    assert model.frozen == ("A", "W")  # canonical order
    params, _ = partition(model)
    assert params.A is None and params.W is None and params.u is not None


# ----------------------------------------------------------------------------------
# Failures are reported, never raised
# ----------------------------------------------------------------------------------


def test_failed_solve_gives_nan_not_error():
    x, y = _data()
    with pytest.warns(UserWarning):
        bad = _model(gamma=3.0, max_steps=50)  # gamma ||A||_2 = 3: Picard does not converge
    eq = bad.equilibrium(x)
    assert not bool(eq.success)
    value, grads = jax.jit(jax.value_and_grad(lambda m: _loss(m, x, y)))(bad)
    assert not np.isfinite(float(value))
    for name in ("A", "W", "u"):
        assert np.all(np.isnan(np.asarray(getattr(grads, name)))), name
    assert not bool(bad.well_posed())


FORCED = diffrax.PIDController(rtol=1e-6, atol=1e-9, dtmin=1e-4, force_dtmin=True)


class _GrowA(eqx.Module):
    """Data risk plus (s − ‖A‖_F²)²: its flow scales A up radially, A(t) = a(t) A(0)."""

    data: EmpiricalRisk
    target: float

    def __call__(self, model):
        return self.data(model) + (self.target - jnp.sum(model.A**2)) ** 2


def test_flow_stops_ill_posed_when_contraction_is_lost():
    x, y = _data()
    model = _model(gamma=0.6)  # gamma ||A(0)||_2 = 0.6; the penalty pushes it towards 1.2
    risk = _GrowA(EmpiricalRisk(x, y, weights=jnp.full(N, 0.5)), 4 * float(jnp.sum(model.A**2)))
    traj = gradient_flow(model, risk, 1.0, controller=FORCED, n_save=10, throw=False)
    assert traj.outcome == Outcome.ILL_POSED
    assert np.isfinite(float(traj.final_risk)) and float(traj.t_stop) < 1.0
    final = traj.model.gamma * np.linalg.norm(np.asarray(traj.model.A), 2)
    # the stop rule is checked after every accepted step, so the last step may overshoot
    # the margin 1 − 0.02 (but the risk stays finite: never DIVERGED, never NaN)
    assert final >= 0.98
    assert float(traj.model.contraction()) >= 0.98


@pytest.mark.slow
def test_ensemble_ill_posed_member_does_not_affect_others():
    import gflow_jax as gf

    x, y = _data()
    risk = EmpiricalRisk(x, y, weights=jnp.full(N, 0.5))

    def bad(key):
        return jax.random.uniform(jax.random.fold_in(key, 1)) < 0.5

    def init(key):
        m = ImplicitReLU(D_IN, WIDTH, gamma=0.5, key=key, init="spectral")
        return eqx.tree_at(lambda m: m.A, m, jnp.where(bad(key), 2.0, 1.0) * m.A)

    keys = jax.random.split(jax.random.key(3), 4)
    expected_bad = np.asarray(jax.vmap(bad)(keys))
    assert expected_bad.any() and not expected_bad.all()
    ens = gf.run_ensemble(
        init,
        risk,
        keys,
        1.0,
        gf.GradientFlow(controller=FORCED, stop=Stop(risk_tol=1e-8), tail="explicit"),
        n_save=10,
        limits=None,
        chunk_size=4,
        compact=False,
    )
    outcome = np.asarray(ens.outcome)
    assert np.all(outcome[expected_bad] == Outcome.ILL_POSED)
    assert np.all(outcome[~expected_bad] != Outcome.ILL_POSED)
    assert np.all(
        np.asarray(ens.final_risk)[~expected_bad] < np.asarray(ens.initial_risk)[~expected_bad]
    )
    assert np.all(np.isfinite(np.asarray(ens.final_risk)))


# ----------------------------------------------------------------------------------
# float32
# ----------------------------------------------------------------------------------


def test_float32():
    x, y = _data()
    m64 = _model()
    # the same parameters in float32; tolerances follow the dtype (rtol 1e-5)
    m32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, m64
    )
    assert m32.A.dtype == jnp.float32 and m32.solver_settings()[0] == 1e-5
    assert m64.solver_settings()[0] == 1e-10
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    eq = m32.equilibrium(x32)
    assert bool(eq.success) and eq.z.dtype == jnp.float32
    np.testing.assert_allclose(m32(x32), m64(x), rtol=1e-4, atol=1e-5)
    g32 = jax.grad(lambda m: _loss(m, x32, y32))(m32)
    g64 = jax.grad(lambda m: _loss(m, x, y))(m64)
    assert g32.A.dtype == jnp.float32
    np.testing.assert_allclose(g32.A, g64.A, rtol=1e-3, atol=1e-4)
    assert m32.well_posed().dtype == jnp.bool_ and bool(m32.well_posed())
    # constructed directly in float32 (other random draws): a valid equilibrium
    direct = _model(dtype=jnp.float32)
    assert direct.A.dtype == jnp.float32
    assert bool(direct.equilibrium(x32).success)
    assert float(jnp.max(direct.equilibrium(x32).residual)) < 1e-4
