"""Statistics for neuron comparisons: t-tests against hand calculations, text helpers, LaTeX tables."""

import math

import pytest
from scipy.stats import t as t_dist

from spikedriven.errors import ConfigError
from spikedriven.analysis.statistics import Comparison, compare_to_baseline, last_mean, latex_table, mean_std

A = [94.1, 94.4, 94.3]
B = [93.9, 94.0, 94.2]


def _sample_var(xs):
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


# ------------------------------------------------------------------ Welch


def test_welch_matches_hand_calculation():
    n1, n2 = len(A), len(B)
    v1, v2 = _sample_var(A), _sample_var(B)  # 0.02333..., 0.02333...
    diff = sum(A) / n1 - sum(B) / n2  # 94.2667 - 94.0333 = 0.2333
    se = math.sqrt(v1 / n1 + v2 / n2)
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    t = diff / se
    p = 2 * (1 - t_dist.cdf(abs(t), df))
    half = t_dist.ppf(0.975, df) * se

    c = compare_to_baseline(A, B)
    assert c.test == "Welch's t-test"
    assert (c.n, c.n_baseline) == (3, 3)
    assert c.difference == pytest.approx(0.23333333, abs=1e-6)
    assert c.difference == pytest.approx(diff)
    assert df == pytest.approx(4.0)  # equal variances and sizes: df = n1 + n2 - 2
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert c.p_value == pytest.approx(0.1347, abs=1e-4)
    assert c.low == pytest.approx(diff - half, rel=1e-9)
    assert c.high == pytest.approx(diff + half, rel=1e-9)
    assert c.verdict == "within noise"


def test_welch_with_unequal_variances_and_sizes():
    a = [76.0, 76.5, 75.2, 76.9]
    b = [75.1, 75.3]
    n1, n2 = len(a), len(b)
    v1, v2 = _sample_var(a), _sample_var(b)
    diff = sum(a) / n1 - sum(b) / n2
    se = math.sqrt(v1 / n1 + v2 / n2)
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    half = t_dist.ppf(0.975, df) * se
    p = 2 * (1 - t_dist.cdf(abs(diff / se), df))

    c = compare_to_baseline(a, b)
    assert (c.n, c.n_baseline) == (4, 2)
    assert df != pytest.approx(n1 + n2 - 2)  # really Welch, not the pooled test
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert (c.low, c.high) == (pytest.approx(diff - half), pytest.approx(diff + half))


def test_confidence_level_is_used():
    n = len(A)
    se = math.sqrt(_sample_var(A) / n + _sample_var(B) / n)
    diff = sum(A) / n - sum(B) / n
    c = compare_to_baseline(A, B, confidence=0.80)
    assert c.high - c.low == pytest.approx(2 * t_dist.ppf(0.90, 4.0) * se)
    assert c.low == pytest.approx(diff - t_dist.ppf(0.90, 4.0) * se)


# ------------------------------------------------------------------ paired


def test_paired_pairs_by_seed_not_position():
    values = {1: 94.1, 2: 94.4, 3: 94.3}
    base = {1: 93.9, 2: 94.15, 3: 94.15}
    d = [values[s] - base[s] for s in (1, 2, 3)]  # 0.2, 0.25, 0.15
    n = len(d)
    mean_d = sum(d) / n
    sd = math.sqrt(_sample_var(d))  # 0.05
    se = sd / math.sqrt(n)
    t = mean_d / se
    p = 2 * (1 - t_dist.cdf(abs(t), n - 1))
    half = t_dist.ppf(0.975, n - 1) * se

    # The baseline lists its seeds in another order: pairing by position would give other differences.
    c = compare_to_baseline([values[1], values[2], values[3]], [base[3], base[1], base[2]],
                            seeds=[1, 2, 3], baseline_seeds=[3, 1, 2])
    assert c.test == "paired t-test, 3 seeds"
    assert mean_d == pytest.approx(0.2)
    assert sd == pytest.approx(0.05)
    assert c.difference == pytest.approx(mean_d)
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert c.p_value == pytest.approx(0.0202, abs=1e-4)  # t = 0.2 / (0.05 / sqrt(3)) = 6.93, df = 2
    assert c.low == pytest.approx(mean_d - half, rel=1e-9)
    assert c.high == pytest.approx(mean_d + half, rel=1e-9)
    assert c.low > 0
    assert c.verdict == "higher"

    by_position = compare_to_baseline([values[1], values[2], values[3]], [base[3], base[1], base[2]])
    assert by_position.p_value != pytest.approx(p)


def test_paired_lower():
    c = compare_to_baseline([93.9, 94.15, 94.15], [94.1, 94.4, 94.3], seeds=[1, 2, 3], baseline_seeds=[1, 2, 3])
    assert c.test.startswith("paired")
    assert c.difference == pytest.approx(-0.2)
    assert c.high < 0
    assert c.verdict == "lower"


def test_mismatched_seed_sets_fall_back_to_welch():
    welch = compare_to_baseline(A, B)
    for seeds, baseline_seeds in [([1, 2, 3], [1, 2, 4]), ([1, 2, 3], None), (None, [1, 2, 3]),
                                  ([1, 1, 2], [1, 2, 2])]:
        c = compare_to_baseline(A, B, seeds=seeds, baseline_seeds=baseline_seeds)
        assert c.test == "Welch's t-test"
        assert c.p_value == pytest.approx(welch.p_value)
        assert (c.low, c.high) == (pytest.approx(welch.low), pytest.approx(welch.high))


def test_different_counts_with_seeds_use_welch():
    c = compare_to_baseline(A + [94.0], B, seeds=[1, 2, 3, 4], baseline_seeds=[1, 2, 3])
    assert c.test == "Welch's t-test"
    assert (c.n, c.n_baseline) == (4, 3)


# ------------------------------------------------------------------ no interval


def test_one_seed_on_either_side():
    c = compare_to_baseline([94.5], B)
    assert c.difference == pytest.approx(94.5 - sum(B) / 3)
    assert (c.low, c.high, c.p_value, c.test) == (None, None, None, None)
    assert c.verdict == "one seed: no interval"
    assert (c.n, c.n_baseline) == (1, 3)
    assert c.interval_text() == "-" and c.p_text() == "-"

    c = compare_to_baseline(A, [94.0])
    assert c.difference == pytest.approx(sum(A) / 3 - 94.0)
    assert (c.low, c.high, c.p_value, c.test) == (None, None, None, None)
    assert c.verdict == "baseline has one seed: no interval"

    assert compare_to_baseline([94.5], [94.0]).verdict == "one seed: no interval"


def _has_nan(c: Comparison) -> bool:
    return any(isinstance(x, float) and math.isnan(x) for x in (c.difference, c.low, c.high, c.p_value))


def test_zero_spread_paired():
    # Every difference is 0.2, up to binary rounding (94.1 - 93.9 != 94.4 - 94.2 in floats).
    c = compare_to_baseline([94.1, 94.4, 94.3], [93.9, 94.2, 94.1], seeds=[1, 2, 3], baseline_seeds=[1, 2, 3])
    assert not _has_nan(c)
    assert c.difference == pytest.approx(0.2)
    assert c.low == c.high == c.difference
    assert c.p_value is None
    assert c.verdict == "no spread between seeds: no interval"
    assert c.p_text() == "-"
    assert c.interval_text() == "+0.20 [+0.20, +0.20]"


def test_zero_spread_welch():
    c = compare_to_baseline([94.0, 94.0], [93.5, 93.5, 93.5])
    assert not _has_nan(c)
    assert c.test == "Welch's t-test"
    assert c.low == c.high == c.difference == pytest.approx(0.5)
    assert c.p_value is None
    assert c.verdict == "no spread between seeds: no interval"


def test_zero_spread_on_one_side_still_gives_welch_interval():
    c = compare_to_baseline([94.0, 94.0, 94.0], B)
    se = math.sqrt(_sample_var(B) / 3)  # only the baseline's variance remains
    diff = 94.0 - sum(B) / 3
    assert c.p_value is not None
    assert c.low == pytest.approx(diff - t_dist.ppf(0.975, 2) * se)  # Welch df = n2 - 1 here


def test_identical():
    c = compare_to_baseline([94.0, 94.0], [94.0, 94.0], seeds=[1, 2], baseline_seeds=[2, 1])
    assert c.verdict == "identical"
    assert c.difference == 0.0 and c.low == 0.0 and c.high == 0.0
    assert c.p_value is None
    c = compare_to_baseline([94.0, 94.0], [94.0, 94.0, 94.0])
    assert c.verdict == "identical"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("values, baseline", [([], [1.0]), ([1.0], []), ([], [])])
def test_empty_inputs(values, baseline):
    with pytest.raises(ConfigError, match="empty"):
        compare_to_baseline(values, baseline)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="finite"):
        compare_to_baseline([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ConfigError, match="one seed per value"):
        compare_to_baseline(A, B, seeds=[1, 2], baseline_seeds=[1, 2, 3])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        compare_to_baseline(A, B, confidence=95)


# ------------------------------------------------------------------ text helpers


def test_interval_and_p_text():
    c = Comparison(0.1234, -0.3012, 0.5432, 0.0312, "Welch's t-test", 3, 3, "within noise")
    assert c.interval_text() == "+0.12 [-0.30, +0.54]"
    assert c.interval_text(digits=3) == "+0.123 [-0.301, +0.543]"
    assert c.p_text() == "0.031"
    assert Comparison(-0.5, -0.9, -0.1, 0.0004, "t", 3, 3, "lower").p_text() == "< 0.001"
    assert Comparison(-0.5, -0.9, -0.1, 0.0004, "t", 3, 3, "lower").interval_text() == "-0.50 [-0.90, -0.10]"
    assert Comparison(0.5, None, None, None, None, 1, 3, "one seed: no interval").interval_text() == "-"


def test_real_comparison_texts():
    c = compare_to_baseline(A, B)
    assert c.interval_text() == f"+0.23 [{c.low:+.2f}, {c.high:+.2f}]"
    assert c.interval_text() == "+0.23 [-0.11, +0.58]"
    assert c.p_text() == "0.135"


def test_mean_std():
    m, s = mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3)
    assert s == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([94.5]) == (94.5, None)
    with pytest.raises(ConfigError):
        mean_std([])


def test_last_mean():
    curve = [float(i) for i in range(1, 13)]  # 1 .. 12
    assert last_mean(curve) == (pytest.approx(sum(range(3, 13)) / 10), 10)
    assert last_mean(curve, n=3) == (pytest.approx(11.0), 3)
    assert last_mean([90.0, 91.0, 95.0]) == (pytest.approx(92.0), 3)  # shorter than n: all of it
    with pytest.raises(ConfigError, match="empty"):
        last_mean([])
    with pytest.raises(ConfigError):
        last_mean(curve, n=0)


# ------------------------------------------------------------------ LaTeX


def test_latex_table_structure_and_escaping():
    text = latex_table(["neuron", "u_th", "top-1"],
                       [["if_soft & 50% #1 $x$ {a} ~ ^ \\", 1.0, (94.344, 0.1249)],
                        ["lif", None, (94.0, None)]],
                       caption="IF_soft vs 100% LIF", label="tab:neurons")
    lines = text.splitlines()
    assert lines[0] == r"% needs \usepackage{booktabs}"
    assert r"\begin{table}" in text and text.rstrip().endswith(r"\end{table}")
    assert r"\begin{tabular}{lrr}" in text
    assert "|" not in text  # no vertical rules
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in lines
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"neuron & u\_th & top-1 \\" in lines
    assert (r"if\_soft \& 50\% \#1 \$x\$ \{a\} \textasciitilde{} \textasciicircum{} \textbackslash{} & $1.00$ & "
            r"$94.34 \pm 0.12$ \\") in lines
    assert r"lif & -- & $94.00$ \\" in lines
    assert r"\caption{IF\_soft vs 100\% LIF}" in lines
    assert r"\label{tab:neurons}" in lines


def test_latex_bold_best_with_tie():
    rows = [["a", (94.34, 0.10), 1.5],
            ["b", (94.341, 0.20), -0.25],  # prints as 94.34 too: a tie
            ["c", (93.0, 0.3), None],
            ["d", None, 1.25]]
    text = latex_table(["run", "top-1", "gap"], rows, bold_best=[1, 2])
    assert r"a & $\mathbf{94.34 \pm 0.10}$ & $\mathbf{1.50}$ \\" in text
    assert r"b & $\mathbf{94.34 \pm 0.20}$ & $-0.25$ \\" in text
    assert r"c & $93.00 \pm 0.30$ & -- \\" in text
    assert r"d & -- & $1.25$ \\" in text
    assert text.count(r"\mathbf") == 3


def test_latex_without_bold_and_bad_shapes():
    text = latex_table(["x"], [[(1.0, 0.5)]])
    assert r"\mathbf" not in text and r"$1.00 \pm 0.50$ \\" in text
    assert r"\caption" not in text and r"\label" not in text
    with pytest.raises(ValueError):
        latex_table(["x", "y"], [[1.0]])
    with pytest.raises(ValueError):
        latex_table(["x"], [[1.0]], bold_best=[3])
