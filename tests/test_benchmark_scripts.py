"""The remaining benchmark scripts at a tiny size (issue 14: a tiny run of every benchmark
script in the suite, so that none rots): ``ensemble_throughput``,
``population_vs_empirical``, ``implicit_cost``, ``limit_labelling``, ``gaussian_risk`` and
``kinks``.

Each test calls the script's ``main(argv)`` in-process (no interpreter start; programs
without host callbacks come from the persistent compilation cache) at the smallest sizes
that still run every row and peer, writing into ``tmp_path``, then checks

1. the schema: the JSON holds every key that the script's README table reads, for every
   row (the table is rebuilt from the stored JSON by the script's own function and must
   equal the one it wrote);
2. the answers: the methods the script compares on the same problem agree (loop, vmap
   and engine; population and empirical risk; Picard and Newton; exact Gaussian risk
   and QMC; the labelling runners' limit classes) to the tolerances justified below.

Timings are never checked. ``peers``, ``torch_peers``, ``cost_growth`` and ``run_all``
have their own tests (``test_benchmarks.py``, ``test_torch_peers.py``,
``test_cost_growth.py``, ``test_bench_run_all.py``).
"""

import json
import math

import pytest

from benchmarks import (
    ensemble_throughput,
    gaussian_risk,
    implicit_cost,
    kinks,
    limit_labelling,
    population_vs_empirical,
)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# The loop of single solves, the vmapped solve and the engine run the same solver
# (Tsit5, PID rtol 1e-7) from the same θ0 with the controller state carried across the
# engine's segments: their final risks agree to rounding (measured 1.3e-15). 1e-6 allows
# a step that rounding accepts in one and rejects in another (an error ~ rtol) on another
# platform, and still fails for any other solver, risk, initialisation or member order.
ENSEMBLE_RISK_RTOL = 1e-6


def test_ensemble_throughput_tiny(tmp_path, capsys):
    # one risk (the two rows run the same code), B = 3 in pools of 2 (refills), segments
    # of 8 steps (several per member), a loop sample of 2 of the 3 members, and a vmap
    # probe (B > --vmap-full: the estimated branch) whose 64 steps finish every member
    # (≤ 44 steps to t1 = 1), so that its answers cover all of them; Tsit5 throughout
    # (the tail phase is the library's, not reached by t1 = 1, and would double the
    # compilation time)
    argv = ["--risks", "exact", "--sizes", "3", "--t1", "1", "--chunk", "2", "--segment", "8",
            "--n-save", "4", "--max-steps", "2000", "--loop-sample", "2", "--probe-steps", "64",
            "--vmap-full", "2", "--tail", "explicit", "--out", str(tmp_path)]  # fmt: skip
    table = ensemble_throughput.main(argv)
    assert table in capsys.readouterr().out
    run = json.loads((tmp_path / "ensemble_throughput.json").read_text())
    assert ensemble_throughput.markdown(run["rows"], run["meta"]) == table
    assert (tmp_path / "ensemble_throughput.md").read_text() == table + "\n"
    assert run["meta"]["tail"] == "explicit" and run["meta"]["t1"] == 1.0

    (row,) = run["rows"]
    assert row["risk"] == "exact population" and row["B"] == 3
    assert row["hit_max_steps"] == 0 and row["useful_member_steps"] > 0
    assert row["engine_evaluated"] >= row["useful_member_steps"]
    assert row["loop_sample"] == 2 and row["vmap_kind"] == "estimated"
    assert row["vmap_risk_members"] == 3
    assert row["loop_risk_rel_dev"] <= ENSEMBLE_RISK_RTOL
    assert row["vmap_risk_rel_dev"] <= ENSEMBLE_RISK_RTOL


def test_population_vs_empirical_tiny(tmp_path, capsys):
    m = 1024
    argv = ["--n", "3", "--width", "3", "--t1", "1", "--chunk-size", "2",
            "--data-sizes", str(m), "--tail", "explicit", "--out", str(tmp_path)]  # fmt: skip
    table = population_vs_empirical.main(argv)
    assert table in capsys.readouterr().out
    path = tmp_path / "population_vs_empirical_n3_t1_tsit5_explicit.json"
    record = json.loads(path.read_text())
    assert population_vs_empirical.markdown(record) == record["markdown"] == table

    exact, empirical = record["rows"]
    assert [exact["risk"], empirical["risk"]] == ["exact population", f"empirical, {m} points"]
    for r in record["rows"]:
        assert sum(r["outcomes"].values()) == 3 and r["hit_max_steps"] == 0
        assert r["t_stop_median"] == 1.0
    # the exact row's own risk is the population risk: the engine's final risk and the
    # script's re-evaluation agree to rounding
    assert exact["final_risk_median"] == pytest.approx(exact["final_population_risk_median"])
    # sample_data's m evenly spaced points (both ends included) integrate the squared
    # residual with an O(1/m) error, measured 1.9e-3 ≈ 2/m (empirical vs population risk
    # of the same final models); the flows' gradients differ by as much, and the final
    # models' population risks by 8e-4. 8/m leaves a margin of 4 and fails for any wrong
    # risk, target or flow (which move the final risk, ≈ 0.1, by O(1)). The medians of
    # three members differ by at most the largest per-member difference.
    pop = exact["final_population_risk_median"]
    assert _rel(empirical["final_population_risk_median"], pop) <= 8 / m
    assert _rel(empirical["final_risk_median"], empirical["final_population_risk_median"]) <= 8 / m


def test_implicit_cost_tiny(tmp_path, capsys):
    result = implicit_cost.main(["--quick", "--repeats", "1", "--out", str(tmp_path)])
    stored = json.loads((tmp_path / "implicit_cost.json").read_text())
    assert stored == result
    cost, iters = stored["vector_field_cost"], stored["iterations_vs_contraction"]
    assert implicit_cost.markdown(cost, iters) in capsys.readouterr().out
    assert [(r["N"], r["m"]) for r in cost] == [(16, 16), (32, 64)]
    assert all(r["picard_steps"] > 0 for r in cost)
    assert [r["gamma_norm"] for r in iters] == pytest.approx([0.3, 0.9], rel=1e-3)
    for r in iters:
        c = r["gamma_norm"]
        assert r["predicted"] == math.ceil(math.log(1e-10) / math.log(c))
        # both solves converged (the iteration stops at a relative step of 1e-10)
        assert r["picard_residual"] <= 1e-8 and r["newton_residual"] <= 1e-8
        # z ↦ relu(γAz + φ) is a c-contraction (c = γ‖A‖₂) in each row's 2-norm, so a
        # point with residual r lies within r / (1 − c) of the fixed point: Picard's and
        # Newton's answers differ by at most the sum (a rigorous bound, plus rounding)
        bound = (r["picard_residual"] + r["newton_residual"]) / (1 - c)
        assert r["picard_newton_max_diff"] <= bound + 1e-12


def test_limit_labelling_tiny(tmp_path, capsys):
    n = 2  # the warm-up size: the timed runs reuse its compiled programs
    assert limit_labelling.main(["--n", str(n), "--t1", "100", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "limit_labelling.json").read_text())
    table = (tmp_path / "limit_labelling.md").read_text()
    assert table in capsys.readouterr().out
    assert result["n"] == n
    assert math.isfinite(result["kvaerno5_us"]) and math.isfinite(result["exponential_us"])

    keys = {"runner", "wall_s", "steps", "tail_steps", "labelled", "fraction_zero_risk",
            "median_final_risk", "labels_agreeing"}  # fmt: skip
    rows = {r["runner"]: r for r in result["rows"]}
    flows = ["tsit5@t1", "kvaerno5 tail", "exponential tail"]
    assert list(rows)[:3] == flows and list(rows)[3].startswith("vmapped GD (lr ")
    for name, r in rows.items():
        assert set(r) == keys, name
        assert f"| {name} | " in table and f"| {r['steps']} | {r['tail_steps']} |" in table
        assert r["steps"] > 0
    assert rows["tsit5@t1"]["tail_steps"] == 0  # Tsit5 throughout
    assert rows["kvaerno5 tail"]["tail_steps"] > 0 and rows["exponential tail"]["tail_steps"] > 0
    # every label a runner gives is the exponential-tail run's, and both tails (to
    # t = inf) label every member: the same classes, so the same fraction risk → 0
    for name in flows:
        assert rows[name]["labels_agreeing"] == rows[name]["labelled"], name
    kvaerno5, exponential = rows["kvaerno5 tail"], rows["exponential tail"]
    assert kvaerno5["labelled"] == exponential["labelled"] == n
    assert kvaerno5["fraction_zero_risk"] == exponential["fraction_zero_risk"]
    # GD reaches the exponential-tail run's final risk on every member
    gd = rows[list(rows)[3]]
    assert gd["fraction_zero_risk"].startswith(f"{n}/{n} reached the flow's final risk")
    assert gd["median_final_risk"] <= exponential["median_final_risk"]
    assert gd["labelled"] == gd["labels_agreeing"] == 0


# Against the exact Gaussian risk, scrambled Sobol' QMC with N nodes: plain Monte Carlo
# would err by about CV/√N (3e-2 at N = 1024 for a coefficient of variation ~1); QMC is
# measured at 4.5e-3 (N = 1024) and 2.4e-3 (N = 4096) in L and ∇L. 2e-2 leaves a margin
# of 4 and fails for any mistake in the closed form or its gradient (a wrong term of the
# arc-cosine kernel or a lost factor moves L by far more).
QMC_RTOL = 2e-2


def test_gaussian_risk_tiny(tmp_path, capsys):
    argv = ["--widths", "2", "--dims", "3", "--fixed-d", "4", "--fixed-n", "3",
            "--qmc-max-log2", "12", "--repeats", "1", "--ensemble", "2",
            "--ensemble-width", "2", "--ensemble-nodes", "1024", "--t1", "1",
            "--out", str(tmp_path)]  # fmt: skip
    table = gaussian_risk.main(argv)
    assert table in capsys.readouterr().out
    record = json.loads((tmp_path / "gaussian_risk_ens2.json").read_text())
    assert gaussian_risk.markdown(record) == record["markdown"] == table

    assert [(r["d"], r["n"], r["k"]) for r in record["cost_by_width"]] == [(4, 2, 2)]
    assert [(r["d"], r["n"], r["k"]) for r in record["cost_by_dim"]] == [(3, 3, 3)]
    qmc = record["qmc"]
    assert [(r["rule"], r["nodes"]) for r in qmc] == [("exact", 0), ("sobol", 1024),
                                                      ("sobol", 4096)]  # fmt: skip
    for r in qmc[1:]:
        assert 0 < r["risk_rel_err"] <= QMC_RTOL, r
        assert 0 < r["grad_rel_err"] <= QMC_RTOL, r

    # the ensemble: flows on the QMC risk end where the exact flows end (their gradients
    # differ by the QMC error, over t1 = 1; measured 1.6e-3 apart in the exact final risk)
    exact, sobol = record["ensemble"]
    assert [exact["risk"], sobol["risk"]] == ["exact", "sobol 1024"]
    for r in (exact, sobol):
        assert 0 < r["steps_median"] <= r["steps_p90"] <= r["steps_max"]
        assert 0 <= r["fraction_exact_final_below_1e-6"] <= 1
    assert _rel(sobol["exact_final_risk_median"], exact["exact_final_risk_median"]) <= QMC_RTOL


# PiecewiseGradientFlow at rtol 1e-6 against the same flow at rtol 1e-10 (tail="explicit"),
# on the members that never slid and ran to t1 (a stopped member's final risk measures
# the step length at the stop, and sliding is not resolved to rtol): measured 1.0e-7 at
# this size (6.9e-6 at n = 64, t1 = 1000, on a risk of 1.3e-9). 1e-5 = 10 rtol leaves a
# margin of 100 and still fails for a path that misses or mislocates a crossing, or for
# the plain GradientFlow at the same rtol (2.1e-4 off on these members).
KINKS_RISK_RTOL = 1e-5


def test_kinks_tiny(tmp_path, capsys):
    # n = 4 (seed 0): every member switches to the tail phase (by t ≈ 10), one slides,
    # three never slide and run to t1 = 20 (the members the accuracy target is measured
    # on); the explicit row (a second compilation of the engine) is skipped; the plain
    # row runs with a small step budget, GD at one learning rate
    out = tmp_path / "kinks.json"
    argv = ["--n", "4", "--t1", "20", "--lrs", "0.1", "--plain-max-steps", "2000",
            "--skip-explicit", "--out", str(out)]  # fmt: skip
    result = kinks.main(argv)
    printed = capsys.readouterr().out
    stored = json.loads(out.read_text())
    table = stored["markdown"]
    assert stored == json.loads(json.dumps(result))
    assert kinks.markdown(stored) == table and table in printed
    assert out.with_suffix(".md").read_text() == table + "\n"
    assert table.startswith("Machine: ")

    rows = stored["rows"]
    assert list(rows) == ["piecewise", "GD", "reference", "plain"]
    flow_keys = {"wall_s", "median", "p99", "max", "max_over_median", "rejected_fraction",
                 "median_final_risk", "outcomes", "risk_bands", "wall_over_gd",
                 "members_no_sliding_to_t1", "risk_rel_dev_no_sliding_to_t1_max",
                 "risk_rel_dev_per_member", "final_risk_per_member", "t_stop_per_member",
                 "steps_per_member"}  # fmt: skip
    assert flow_keys <= set(rows["piecewise"]) and flow_keys <= set(rows["plain"])
    assert {"tail_members", "tail_steps_median", "crossings_median_ref",
            "sliding_members_ref"} <= set(rows["piecewise"])  # fmt: skip
    assert {"capped_members"} <= set(rows["plain"])
    assert {"learning_rate", "wall_s", "iterations", "budget_iterations", "goal",
            "median_risk", "stable", "risk_bands"} <= set(rows["GD"])  # fmt: skip
    assert {"wall_s_with_compilation", "outcomes", "median_final_risk",
            "final_risk_per_member", "slides_per_member", "t_stop_per_member"} <= set(
        rows["reference"]
    )  # fmt: skip

    pw, ref, gd, plain = rows["piecewise"], rows["reference"], rows["GD"], rows["plain"]
    assert sum(pw["outcomes"].values()) == 4 and pw["outcomes"] == ref["outcomes"]
    assert pw["tail_members"] == 4  # the tail phase is exercised
    assert plain["capped_members"] == 0 and sum(plain["outcomes"].values()) == 4
    # fractions by outcome and by final risk: the plain flow's are the reference's too
    assert plain["outcomes"] == ref["outcomes"]
    assert plain["risk_bands"] == ref["risk_bands"] == pw["risk_bands"]
    # the accuracy check is not empty: members that never slid and ran to t1
    full = [
        i
        for i, (slides, t_ref, t_pw) in enumerate(
            zip(
                ref["slides_per_member"],
                ref["t_stop_per_member"],
                pw["t_stop_per_member"],
                strict=True,
            )  # fmt: skip
        )
        if slides == 0 and t_ref == t_pw == 20.0
    ]
    assert len(full) == pw["members_no_sliding_to_t1"] >= 1
    for i in full:
        assert _rel(pw["final_risk_per_member"][i], ref["final_risk_per_member"][i]) <= (
            KINKS_RISK_RTOL
        ), i
    assert pw["risk_rel_dev_no_sliding_to_t1_max"] <= KINKS_RISK_RTOL
    # GD ran to the piecewise flow's median final risk, or spent its budget (t1/η)
    assert gd["stable"] and gd["learning_rate"] == 0.1
    assert gd["goal"] == pw["median_final_risk"]
    assert gd["median_risk"] <= gd["goal"] or gd["iterations"] >= gd["budget_iterations"]
    assert pw["wall_over_gd"] == pytest.approx(pw["wall_s"] / gd["wall_s"])

    # the targets table: each verdict follows from the JSON numbers (issue 13's thresholds)
    expected = {
        "max/median steps ≤ 3": pw["max_over_median"] <= 3,
        "wall ≤ 2× GD reaching the same median risk": pw["wall_over_gd"] <= 2,
        "final risk = reference to 1e-6 relative (members that never slid and ran to t1)": (
            pw["risk_rel_dev_no_sliding_to_t1_max"] <= 1e-6
        ),
    }
    verdicts = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in expected:
            assert cells[1] == kinks.LABELS["piecewise"]
            verdicts[cells[0]] = cells[-1]
    assert verdicts == {k: "reached" if v else "not reached" for k, v in expected.items()}
    assert [t["reached"] for t in stored["targets"]] == list(expected.values())

    # without the reference (`--skip-reference`, for large n): no deviations, the tables
    # say so, and the accuracy target is "not measured"
    bare = json.loads(json.dumps(stored))
    del bare["rows"]["reference"]
    for row in (bare["rows"]["piecewise"], bare["rows"]["plain"]):
        for key in [k for k in row if "rel_dev" in k or k == "members_no_sliding_to_t1"]:
            del row[key]
    bare["targets"] = kinks.targets(bare["rows"])
    text = kinks.markdown(bare)
    assert "no reference run" in text and "reference (rtol" not in text
    accuracy = [t for t in bare["targets"] if t["key"] == "risk_rel_dev_no_sliding_to_t1_max"]
    assert [t["reached"] for t in accuracy] == [None] and "not measured" in text
    assert 0 <= gd["members_rising"] <= 4
