"""gflow_jax.statistics: Wilson intervals, bounds with unresolved members, the 2×2 table."""

import math

import numpy as np
import pytest

from gflow_jax.statistics import (
    ContingencyTable,
    Fraction,
    certification_table,
    fraction_bounds,
    wilson_interval,
)


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_interval_hand_values():
    for k, n in [(0, 10), (3, 10), (10, 10), (7, 20)]:
        f = wilson_interval(k, n)
        assert isinstance(f, Fraction) and f.estimate == pytest.approx(k / n)
        low, high = _wilson_by_hand(k, n)
        assert f.low == pytest.approx(low, abs=1e-12) and f.high == pytest.approx(high, abs=1e-12)
    assert f.low < 7 / 20 < f.high and "(7/20)" in str(f)
    empty = wilson_interval(0, 0)
    assert math.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_fraction_bounds_without_unresolved_is_wilson():
    for k, n in [(0, 12), (5, 12), (12, 12)]:
        b = fraction_bounds(k, 0, n)
        w = wilson_interval(k, n)
        assert isinstance(b, Fraction) and b == w and str(b) == str(w)
        assert (b.low_all_unresolved_fail, b.high_all_unresolved_succeed) == (w.low, w.high)
        assert b.unresolved == 0


def test_fraction_bounds_all_unresolved_is_everything():
    b = fraction_bounds(0, 25, 25)
    assert b.count == 0 and b.estimate == 0.0 and b.unresolved == 25
    assert b.low_all_unresolved_fail == pytest.approx(0.0, abs=1e-12)
    assert b.high_all_unresolved_succeed == pytest.approx(1.0, abs=1e-12)


def test_fraction_bounds_closed_form_and_monotone():
    b = fraction_bounds(3, 4, 20, confidence=0.9)
    known = wilson_interval(3, 20, 0.9)
    assert (b.count, b.total, b.estimate, b.low, b.high) == (3, 20, 0.15, known.low, known.high)
    assert b.low_all_unresolved_fail == known.low
    assert b.high_all_unresolved_succeed == wilson_interval(7, 20, 0.9).high
    assert b.confidence == 0.9 and "4 unresolved" in str(b)
    # the range contains the Wilson interval of every way the unresolved could turn out
    for k in range(3, 8):
        w = wilson_interval(k, 20, 0.9)
        assert b.low_all_unresolved_fail <= w.low and w.high <= b.high_all_unresolved_succeed
    # more unresolved members widen the range upwards only
    wider = fraction_bounds(3, 6, 20, confidence=0.9)
    assert wider.low_all_unresolved_fail == b.low_all_unresolved_fail
    assert wider.high_all_unresolved_succeed > b.high_all_unresolved_succeed


@pytest.mark.parametrize("count, unresolved, total", [(-1, 0, 5), (2, -1, 5), (3, 3, 5)])
def test_fraction_bounds_bad_counts(count, unresolved, total):
    with pytest.raises(ValueError, match="count"):
        fraction_bounds(count, unresolved, total)


def test_certification_table():
    cert = np.array([True, True, False, False, True, False])
    conv = np.array([True, False, True, False, True, True])
    t = certification_table(cert, conv)
    assert isinstance(t, ContingencyTable)
    np.testing.assert_array_equal(t.counts, [[2, 1], [2, 1]])
    assert t.total == 6 and t.false_certificates == 1
    assert t.certified_fraction == pytest.approx(0.5)
    assert t.converged_fraction == pytest.approx(4 / 6)
    assert "| certified | 2 | 1 | 3 |" in t.to_markdown() and str(t) == t.to_markdown()
    with pytest.raises(ValueError):
        certification_table(cert, conv[:3])
    with pytest.raises(TypeError):
        certification_table(cert.astype(int), conv)
