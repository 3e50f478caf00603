"""Bad input raises ValueError/TypeError at the boundary, with a message that says what to
change. No test here compiles a flow: every error is raised before integration."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import descend as gradient_descent
from toys import flow as gradient_flow

import gflow_jax as gf
from gflow_jax.dynamics.problem import save_grid as time_grid
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.outcomes import Stop
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.targets import Affine, Constant, PiecewiseLinear, sample_data


@pytest.fixture(scope="module")
def problem():
    x, y = sample_data(Affine(1.0, 0.5), 8)
    return ShallowReLU(1, 2, key=jax.random.key(0)), EmpiricalRisk(x, y)


def _gf(problem, **kw):
    model, risk = problem
    return gradient_flow(model, risk, kw.pop("t1", 1.0), **kw)


def _gd(problem, **kw):
    model, risk = problem
    return gradient_descent(model, risk, kw.pop("learning_rate", 0.1), kw.pop("steps", 10), **kw)


# -- shapes ----------------------------------------------------------------------------------


def test_inputs_with_wrong_d_in(problem):
    model, _ = problem
    risk2 = EmpiricalRisk(jnp.ones((5, 2)), jnp.ones(5))
    for run in (gradient_flow, gradient_descent):
        with pytest.raises(ValueError, match=r"expects inputs of shape \(n, 1\), got \(5, 2\)"):
            run(model, risk2, 1.0, 10) if run is gradient_descent else run(model, risk2, 1.0)
    with pytest.raises(ValueError, match=r"Reshape a 1-d batch with x\[:, None\]"):
        model(jnp.ones(5))


def test_targets_with_wrong_rows_or_d_out(problem):
    model, _ = problem
    with pytest.raises(ValueError, match="same positive number of rows; got 5 and 4"):
        EmpiricalRisk(jnp.ones(5), jnp.ones(4))
    with pytest.raises(ValueError, match="same positive number of rows"):
        EmpiricalRisk(jnp.ones((0, 1)), jnp.ones((0, 1)))
    with pytest.raises(ValueError, match=r"must be \(N, d_in\) or \(N,\)"):
        EmpiricalRisk(jnp.ones((5, 1, 1)), jnp.ones(5))
    risk_d2 = EmpiricalRisk(jnp.ones(5), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="check the model's d_out"):
        gradient_flow(model, risk_d2, 1.0)


def test_nan_or_inf_in_data():
    with pytest.raises(ValueError, match="x contains NaN or inf; clean the data"):
        EmpiricalRisk(jnp.array([0.0, jnp.nan]), jnp.ones(2))
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        EmpiricalRisk(jnp.ones(2), jnp.array([1.0, jnp.inf]))
    with pytest.raises(TypeError, match="x must be a floating array"):
        EmpiricalRisk(jnp.arange(3), jnp.ones(3))


def test_bad_weights():
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        EmpiricalRisk(jnp.ones(3), jnp.ones(3), jnp.ones(2))
    for w in ([1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match="finite, non-negative and not all zero"):
            EmpiricalRisk(jnp.ones(3), jnp.ones(3), jnp.asarray(w))


# -- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["d_in", "width", "d_out"])
def test_model_sizes(field):
    sizes = {"d_in": 1, "width": 2, "d_out": 1}
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"{field} must be >= 1, got {bad}. Use a positive"):
            ShallowReLU(**{**sizes, field: bad}, key=jax.random.key(0))
    with pytest.raises(TypeError, match=f"{field} must be an int"):
        ShallowReLU(**{**sizes, field: 2.5}, key=jax.random.key(0))


def test_model_init_options():
    with pytest.raises(ValueError, match="init must be 'normal', 'he' or 'lecun'"):
        ShallowReLU(1, 2, key=jax.random.key(0), init="xavier")
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale must be a finite positive number"):
            ShallowReLU(1, 2, key=jax.random.key(0), scale=scale)
    with pytest.raises(ValueError, match=r"theta must have shape \(7,\)"):
        ShallowReLU.from_flat(jnp.zeros(6), 1, 2)


def test_model_without_trainable_arrays_or_mixed_dtypes():
    class Empty(eqx.Module):
        n: int = 3

    with pytest.raises(ValueError, match="no trainable floating-point arrays"):
        gradient_flow(Empty(), lambda m: jnp.zeros(()), 1.0)

    class Mixed(eqx.Module):
        a: jax.Array
        b: jax.Array

    m = Mixed(jnp.ones(2, jnp.float32), jnp.ones(2, jnp.float64))
    with pytest.raises(TypeError, match="must share one dtype"):
        gradient_flow(m, lambda m: jnp.sum(m.a) + jnp.sum(m.b), 1.0)


def test_risk_must_be_a_scalar_callable(problem):
    model, _ = problem
    with pytest.raises(TypeError, match="risk must be callable"):
        gradient_flow(model, 3.0, 1.0)
    with pytest.raises(ValueError, match=r"must return a scalar, got shape \(2,\)"):
        gradient_flow(model, lambda m: m.b, 1.0)


# -- flow options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("t1", [0.0, -1.0, float("nan")])
def test_t1_must_be_positive(problem, t1):
    with pytest.raises(ValueError, match="t1 must be a positive number.*Pass the horizon"):
        _gf(problem, t1=t1)
    with pytest.raises(TypeError, match="t1 must be a positive number"):
        _gf(problem, t1="10")
    with pytest.raises(TypeError, match="t1 must be a scalar time"):
        _gf(problem, t1=jnp.array([1.0, 2.0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"risk_tol": 0}, "Stop.risk_tol must be a finite positive number, got 0.0"),
        ({"risk_tol": -1e-3}, "Stop.risk_tol must be a finite positive number"),
        ({"grad_tol": -1}, "Stop.grad_tol must be a finite positive number, got -1.0"),
        ({"grad_tol": float("nan")}, "Stop.grad_tol must be a finite positive number"),
        ({"bound": 0.0}, "Stop.bound must be a positive number, got 0.0"),
    ],
)
def test_stop_tolerances_must_be_positive(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Stop(**kwargs)


def test_stop_type_errors(problem):
    with pytest.raises(TypeError, match="Stop.risk_tol must be a positive number"):
        Stop(risk_tol="small")
    with pytest.raises(TypeError, match="stop must be a gflow_jax.Stop"):
        _gf(problem, stop={"risk_tol": 1e-3})
    assert Stop(bound=float("inf")).bound == float("inf")  # inf disables the bound


@pytest.mark.parametrize(
    "save_ts, match",
    [
        ([0.0, 0.5, 0.3], r"save_ts must be non-decreasing and lie in \[0, t1\]"),
        ([1.0, 0.5, 0.0], r"save_ts must be non-decreasing"),
        ([0.0, 0.5, 1.5], r"lie in \[0, t1\]"),
        ([-0.1, 0.5], r"lie in \[0, t1\]"),
        ([[0.0, 0.5]], "save_ts must be a non-empty 1-d array"),
        ([], "save_ts must be a non-empty 1-d array"),
    ],
)
def test_bad_save_ts(problem, save_ts, match):
    with pytest.raises(ValueError, match=match):
        _gf(problem, save_ts=np.array(save_ts))


def test_n_save_at_least_two(problem):
    with pytest.raises(ValueError, match="n_save must be >= 2, got 1"):
        _gf(problem, n_save=1)
    with pytest.raises(ValueError, match="n_save must be >= 2, got 1"):
        gf.integrate(*problem, 1.0, gf.GradientDescent(0.1), n_save=1)
    with pytest.raises(ValueError, match="n_save must be >= 2"):
        time_grid(1.0, 1)


def test_solver_options(problem):
    with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
        _gf(problem, max_steps=0)
    with pytest.raises(TypeError, match="max_steps must be an int"):
        _gf(problem, max_steps=1e3)
    with pytest.raises(ValueError, match="dt0 must be a finite positive number"):
        _gf(problem, dt0=-0.1)
    with pytest.raises(TypeError, match="solver must be a diffrax.AbstractSolver"):
        _gf(problem, solver="tsit5")
    with pytest.raises(TypeError, match="controller must be a diffrax.AbstractStepSizeController"):
        _gf(problem, controller=1e-6)
    assert isinstance(diffrax.Tsit5(), diffrax.AbstractSolver)


# -- descent options -------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_learning_rate_must_be_positive(problem, lr):
    with pytest.raises(ValueError, match="learning_rate must be a finite positive number"):
        _gd(problem, learning_rate=lr)


def test_steps_and_optimizer(problem):
    for steps in (0, -5):
        with pytest.raises(ValueError, match=f"steps must be >= 1, got {steps}"):
            _gd(problem, steps=steps)
    with pytest.raises(TypeError, match="steps must be an int"):
        _gd(problem, steps=10.0)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        _gd(problem, optimizer="adam")


# -- targets and data ------------------------------------------------------------------------------


def test_target_and_sampling_errors():
    with pytest.raises(ValueError, match="scalar or 1-d slope and a scalar intercept"):
        Affine(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="scalar or a 1-d vector"):
        Constant(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="equal length >= 2"):
        PiecewiseLinear([0.0], [1.0])
    with pytest.raises(ValueError, match="knots must be finite"):
        PiecewiseLinear([0.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-d target"):
        PiecewiseLinear([0.0, 1.0], [0.0, 1.0])(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_data(Affine(1.0), 0)
    with pytest.raises(ValueError, match="need finite low < high"):
        sample_data(Affine(1.0), 5, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="d_in must be >= 1"):
        sample_data(Affine(1.0), 5, d_in=0, key=jax.random.key(0))


# -- every public argument: type, shape, dtype, finiteness, range (one test per class) -------

PID = diffrax.PIDController


@pytest.mark.parametrize(
    "controller, match",
    [
        (PID(rtol=-1.0, atol=1e-8), "PIDController.rtol must be a finite number >= 0"),
        (PID(rtol=float("nan"), atol=1e-8), "PIDController.rtol must be a finite number"),
        (PID(rtol=1e-6, atol=float("inf")), "PIDController.atol must be a finite number"),
        (PID(rtol=0.0, atol=0.0), "rtol and atol are both 0"),
        (PID(rtol=1e-6, atol=1e-8, dtmin=-1.0), "PIDController.dtmin must be a finite number > 0"),
        (PID(rtol=1e-6, atol=1e-8, dtmax=0.0), "PIDController.dtmax must be a number > 0"),
        (PID(rtol=1e-6, atol=1e-8, dtmin=1.0, dtmax=0.1), r"dtmin \(1.0\) must not exceed dtmax"),
        (PID(rtol=1e-6, atol=1e-8, factormin=2.0), r"factormin must be in \(0, 1\)"),
        (PID(rtol=1e-6, atol=1e-8, factormax=0.5), "factormax must be a finite number >= 1"),
        (PID(rtol=1e-6, atol=1e-8, safety=1.5), r"safety must be in \(0, 1\]"),
        (PID(rtol=1e-6, atol=1e-8, safety=float("nan")), "safety must be in"),
        (PID(rtol=1e-6, atol=1e-8, pcoeff=float("nan")), "pcoeff must be a finite number"),
        (PID(rtol=1e-6, atol=1e-8, icoeff=-1.0), r"pcoeff \+ icoeff \+ dcoeff must be > 0"),
        (diffrax.ConstantStepSize(), "ConstantStepSize.*pass dt0=... to GradientFlow"),
        (
            diffrax.ClipStepSizeController(PID(rtol=1e-6, atol=1e-8), jump_ts=[1.0]),
            "jump_ts=.*is not supported",
        ),
        (diffrax.ClipStepSizeController(PID(rtol=-1.0, atol=1e-8)), "PIDController.rtol"),
    ],
)
def test_bad_controller_settings_are_refused(controller, match):
    with pytest.raises(ValueError, match=match):
        gf.GradientFlow(controller=controller)
    with pytest.raises(ValueError, match=match):
        gf.GradientFlow(controller=controller, tail="explicit", solver=diffrax.Kvaerno5())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"adjoint": "x"}, TypeError, "adjoint must be a diffrax.AbstractAdjoint"),
        ({"solver": "tsit5"}, TypeError, "solver must be a diffrax.AbstractSolver"),
        ({"solver": diffrax.Euler()}, ValueError, "no error estimate.*ConstantStepSize"),
        ({"tail": "implicit"}, ValueError, "tail must be 'auto', 'explicit' or"),
        ({"stiffness_threshold": float("nan")}, ValueError, "stiffness_threshold must be"),
        ({"dt0": float("inf")}, ValueError, "dt0 must be a finite positive number"),
        ({"max_steps": 2.5}, TypeError, "max_steps must be an int"),
    ],
)
def test_bad_flow_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        gf.GradientFlow(**kwargs)


KEY = jax.random.key(0)
MODELS = {
    "ShallowReLU": lambda **kw: gf.ShallowReLU(1, 2, **kw),
    "DeepMLP": lambda **kw: gf.DeepMLP((1, 3, 1), "tanh", **kw),
    "ImplicitReLU": lambda **kw: gf.ImplicitReLU(2, 3, gamma=0.5, **kw),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key": None}, r"key is required.*jax.random.key\(0\)"),
        ({"key": 42}, r"not the number 42.*jax.random.key\(0\)"),
        ({"key": 1.5}, r"must be a JAX PRNG key"),
        ({"key": "seed"}, r"must be a JAX PRNG key"),
        ({"key": jax.random.split(KEY, 3)}, "a single PRNG key, got a batch"),
        ({"key": KEY, "dtype": jnp.int32}, "dtype must be a floating dtype"),
        ({"key": KEY, "dtype": "foo"}, "dtype must be a floating dtype"),
        ({"key": KEY, "dtype": jnp.complex64}, "dtype must be a floating dtype"),
    ],
)
def test_model_constructors_refuse_bad_keys_and_dtypes(model, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        MODELS[model](**kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Affine("abc"),
        lambda: Affine(None),
        lambda: Affine(1j),
        lambda: Affine(1.0, "x"),
        lambda: Affine(float("nan")),
        lambda: Constant("abc"),
        lambda: Constant(float("inf")),
        lambda: PiecewiseLinear("ab", "cd"),
        lambda: PiecewiseLinear([0.0, 1.0], [0.0, None]),
        lambda: EmpiricalRisk("abc", [1.0]),
        lambda: EmpiricalRisk(None, None),
        lambda: EmpiricalRisk(jnp.ones(3) * 1j, jnp.ones(3)),
    ],
)
def test_targets_and_data_refuse_non_real_values(make):
    with pytest.raises((TypeError, ValueError), match="must be|must have"):
        make()


@pytest.mark.parametrize(
    "risk, error, match",
    [
        (lambda m: 3, TypeError, "risk\\(model\\) must return a real floating-point scalar"),
        (lambda m: jnp.sum(m.w) * 1j, TypeError, "got dtype complex"),
        (lambda m: jnp.sum(m.w).astype(jnp.int32), TypeError, "got dtype int32"),
        (lambda m: m.w, ValueError, r"must return a scalar, got shape \(2, 1\)"),
        (lambda m: None, TypeError, "must return a real floating-point scalar"),
        (lambda m: "small", TypeError, "returned a value that is not an array"),
        (EmpiricalRisk, TypeError, "got the class EmpiricalRisk; instantiate it"),
        ("mse", TypeError, "risk must be callable"),
    ],
)
def test_risk_outputs_are_checked_at_the_boundary(problem, risk, error, match):
    model, _ = problem
    with pytest.raises(error, match=match):
        gf.integrate(model, risk, 1.0)


@pytest.mark.parametrize(
    "t1, error",
    [
        (jnp.array([1.0, 2.0]), TypeError),
        ([1.0, 2.0], TypeError),
        (None, TypeError),
        (1j, TypeError),
        (-math.inf, ValueError),
        ("1", TypeError),
    ],  # fmt: skip
)
def test_bad_horizon(problem, t1, error):
    with pytest.raises(error, match="t1 must be"):
        gf.integrate(*problem, t1)


@pytest.mark.parametrize(
    "save_ts, error, match",
    [
        ([0.0, math.nan, 1.0], ValueError, "save_ts must be finite, got nan at index 1"),
        ([0.0, math.inf], ValueError, "save_ts must be finite, got inf"),
        ([0.0, 0.7, 0.5], ValueError, r"decreases from 0.7 \(index 1\) to 0.5"),
        ("abc", TypeError, "save_ts must be a real number or an array"),
        ([0j, 1j], TypeError, "save_ts must be real numbers"),
        ([0.0, None], TypeError, "save_ts must be"),
    ],
)
def test_bad_save_times(problem, save_ts, error, match):
    with pytest.raises(error, match=match):
        gf.integrate(*problem, 1.0, save_ts=save_ts)


def _init(key):
    return ShallowReLU(1, 2, key=key)


def _key_dependent_width(key):
    return ShallowReLU(1, 1 + int(jax.random.key_data(key)[-1] % 3), key=key)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((3,), {}, TypeError, "init must be a callable key -> model"),
        ((lambda k: None,), {}, TypeError, r"init\(key\) must be a model"),
        ((_key_dependent_width,), {}, ValueError, r"share one architecture.*leaf \.w is"),
        ((_init,), {"compact": "no"}, TypeError, "compact must be True or False"),
        ((_init,), {"progress": "yes"}, TypeError, "progress must be True or False"),
        ((_init,), {"devices": "cpu"}, TypeError, "devices must be a list of JAX devices"),
        ((_init,), {"devices": []}, ValueError, "devices must name at least one device"),
        ((_init,), {"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ((_init,), {"limits": "none"}, TypeError, "limits must be a gflow_jax.LimitAnalysis"),
        ((_init,), {"save_ts": [0.0, math.nan]}, ValueError, "save_ts must be finite"),
        ((_init,), {"steps": 3}, TypeError, r"run_ensemble\(\) got an unexpected keyword"),
    ],
)
def test_run_ensemble_options(problem, args, kwargs, error, match):
    _, risk = problem
    keys = jax.random.split(jax.random.key(0), 4)
    with pytest.raises(error, match=match):
        gf.run_ensemble(*args, risk, keys, 1.0, **kwargs)
