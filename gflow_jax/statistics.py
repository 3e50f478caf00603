"""Statistics of ensembles in one place: proportions with confidence intervals and the
certified × converged contingency table.

- :class:`Fraction` / :func:`wilson_interval`: a proportion ``k/n`` with its Wilson score
  interval;
- :func:`fraction_bounds`: the same when some members are *unresolved* (e.g. flows
  stopped before their limit was known), so the count itself is only known to lie in
  ``[k, k + u]``; the returned :class:`Fraction` also carries that range;
- :class:`ContingencyTable` / :func:`certification_table`: certified yes/no against
  converged yes/no.

This module imports nothing from ``gflow_jax`` (numpy and scipy only).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import ArrayLike, Bool

__all__ = [
    "ContingencyTable",
    "Fraction",
    "certification_table",
    "fraction_bounds",
    "wilson_interval",
]


# ----------------------------------------------------------------------------------
# Proportions with confidence intervals
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fraction:
    """A proportion ``count / total`` with its Wilson score interval ``[low, high]``.

    **Fields:**

    - `count`, `total`: the members with the property and all members;
    - `estimate`: ``count/total`` (NaN for ``total = 0``);
    - `low`, `high`: the Wilson score interval of ``count/total``
      (:func:`wilson_interval`);
    - `confidence`: its two-sided confidence level;
    - `unresolved`: members whose outcome is unknown (not in `count`; ``0`` unless made
      by :func:`fraction_bounds`);
    - `low_all_unresolved_fail`: the Wilson low of ``count/total``, i.e. counting every
      unresolved member as a failure (equal to `low`);
    - `high_all_unresolved_succeed`: the Wilson high of ``(count + unresolved)/total``,
      i.e. counting every unresolved member as a success (equal to `high` when
      ``unresolved = 0``).

    Left unset, the last two default to `low` and `high`.
    """

    count: int
    total: int
    estimate: float
    low: float
    high: float
    confidence: float = 0.95
    unresolved: int = 0
    low_all_unresolved_fail: float | None = None
    high_all_unresolved_succeed: float | None = None

    def __post_init__(self):
        if self.low_all_unresolved_fail is None:
            object.__setattr__(self, "low_all_unresolved_fail", self.low)
        if self.high_all_unresolved_succeed is None:
            object.__setattr__(self, "high_all_unresolved_succeed", self.high)

    def __str__(self) -> str:
        text = f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.count}/{self.total})"
        if self.unresolved:
            text += (
                f"; {self.unresolved} unresolved: [{self.low_all_unresolved_fail:.3f}, "
                f"{self.high_all_unresolved_succeed:.3f}]"
            )
        return text


def wilson_interval(count: int, total: int, confidence: float = 0.95) -> Fraction:
    """Wilson score interval for a binomial proportion.

    With ``p̂ = k/n`` and ``z`` the two-sided normal quantile,
    ``centre = (p̂ + z²/2n) / (1 + z²/n)``,
    ``half = z/(1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²)``. Unlike the normal
    approximation it stays inside ``[0, 1]`` and is honest for ``k = 0`` or ``k = n``.

    **Arguments:**

    - `count`: ``k``, members with the property (``0 ≤ k ≤ n``).
    - `total`: ``n``, all members (``≥ 0``).
    - `confidence`: two-sided confidence level in ``(0, 1)`` (default ``0.95``), so
      ``z = Φ⁻¹(1/2 + confidence/2)``.

    **Returns:**

    A :class:`Fraction` with `estimate` ``= k/n`` and ``[low, high] = centre ∓ half``
    clipped to ``[0, 1]`` (no unresolved members). For ``n = 0``: `estimate` NaN and
    ``[0, 1]``.
    """
    from scipy.stats import norm

    count, total = int(count), int(total)
    if total < 0 or not 0 <= count <= total:
        raise ValueError(f"need 0 <= count <= total, got count={count}, total={total}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if total == 0:
        return Fraction(0, 0, math.nan, 0.0, 1.0, confidence)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = count / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return Fraction(count, total, p, max(0.0, centre - half), min(1.0, centre + half), confidence)


def fraction_bounds(count: int, unresolved: int, total: int, confidence: float = 0.95) -> Fraction:
    """The Wilson interval of ``count/total`` and the range left by unresolved members.

    Some members may be *unresolved* (e.g. flows stopped before their limit was known),
    so the true count lies in ``[count, count + unresolved]``. Both Wilson bounds
    increase with the count, so whatever the unresolved members turn out to be, the
    Wilson interval of the true count lies inside
    ``[low_all_unresolved_fail, high_all_unresolved_succeed]``: that range keeps the
    Wilson interval's (approximate) coverage. With ``unresolved = 0`` it is the Wilson
    interval; with every member unresolved it is ``[0, 1]``.

    **Arguments:**

    - `count`: members known to have the property (``≥ 0``).
    - `unresolved`: members whose outcome is unknown (``≥ 0``;
      ``count + unresolved ≤ total``).
    - `total`: all members.
    - `confidence`: two-sided confidence level in ``(0, 1)``.

    **Returns:**

    A :class:`Fraction`: `estimate`, `low`, `high` are those of ``count/total``
    (:func:`wilson_interval`); `low_all_unresolved_fail` = Wilson low of
    ``count/total``; `high_all_unresolved_succeed` = Wilson high of
    ``(count + unresolved)/total``; `unresolved` as given.
    """
    count, unresolved, total = int(count), int(unresolved), int(total)
    if count < 0 or unresolved < 0 or count + unresolved > total:
        raise ValueError(
            "need count >= 0, unresolved >= 0 and count + unresolved <= total, got "
            f"count={count}, unresolved={unresolved}, total={total}."
        )
    known = wilson_interval(count, total, confidence)
    optimistic = wilson_interval(count + unresolved, total, confidence)
    return dataclasses.replace(
        known,
        unresolved=unresolved,
        low_all_unresolved_fail=known.low,
        high_all_unresolved_succeed=optimistic.high,
    )


# ----------------------------------------------------------------------------------
# Certified × converged
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContingencyTable:
    """2×2 table of an ensemble: rows certified yes/no, columns converged yes/no.

    ``counts[i, j]`` with ``i = 0`` certified, ``1`` not; ``j = 0`` converged, ``1`` not.
    ``false_certificates`` = certified but not converged: a counter-example to the
    theorem *or* (far more likely) to the optimism of the estimate, or a flow stopped
    too early — inspect those runs.
    """

    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def false_certificates(self) -> int:
        return int(self.counts[0, 1])

    @property
    def certified_fraction(self) -> float:
        return float(self.counts[0].sum() / max(self.total, 1))

    @property
    def converged_fraction(self) -> float:
        return float(self.counts[:, 0].sum() / max(self.total, 1))

    def to_markdown(self) -> str:
        c = self.counts
        return "\n".join(
            [
                "| | converged | not converged | total |",
                "|---|---:|---:|---:|",
                f"| certified | {c[0, 0]} | {c[0, 1]} | {c[0].sum()} |",
                f"| not certified | {c[1, 0]} | {c[1, 1]} | {c[1].sum()} |",
                f"| total | {c[:, 0].sum()} | {c[:, 1].sum()} | {c.sum()} |",
            ]
        )

    def __str__(self) -> str:
        return self.to_markdown()


def certification_table(
    certified: Bool[ArrayLike, "..."], converged: Bool[ArrayLike, "..."]
) -> ContingencyTable:
    """Cross-tabulate boolean arrays `certified` and `converged`.

    **Arguments:**

    - `certified`: per member, whether the (estimated) criterion held.
    - `converged`: per member, whether the flow converged; same shape.

    **Returns:**

    A :class:`ContingencyTable` over all entries.
    """
    a = np.asarray(certified)
    b = np.asarray(converged)
    if a.shape != b.shape:
        raise ValueError(f"certified and converged must have one shape, got {a.shape}, {b.shape}.")
    if a.dtype != bool or b.dtype != bool:
        raise TypeError("certified and converged must be boolean arrays.")
    a, b = a.ravel(), b.ravel()
    counts = np.array(
        [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.int64
    )
    return ContingencyTable(counts)
