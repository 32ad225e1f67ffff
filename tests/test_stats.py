"""Statistics over seeds on hand-made numbers: known mean, std, t quantiles, intervals, paired and Welch
differences."""

import math

import pytest

from common.stats import PAIRED_NAME, paired_difference, summarize, t_quantile, welch_difference


@pytest.mark.parametrize("df, printed", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423),
                                         (math.inf, 1.9600)])
def test_t_quantile_matches_printed_tables(df, printed):
    assert t_quantile(0.975, df) == pytest.approx(printed, abs=1e-4)


def test_t_quantile_non_integer_df():
    assert t_quantile(0.975, 3.5) == pytest.approx(2.940089, abs=1e-6)  # scipy.stats.t.ppf(0.975, 3.5)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_summary_of_five_seeds():
    s = summarize([0.95, 0.96, 0.97, 0.98, 0.99])
    assert (s.n, s.min, s.max) == (5, 0.95, 0.99)
    assert s.mean == pytest.approx(0.97)
    assert s.std == pytest.approx(math.sqrt(0.00025))  # sum of squares 0.001 over n - 1 = 4
    half = 2.776445 * math.sqrt(0.00025) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert s.ci95 == pytest.approx((0.97 - half, 0.97 + half), abs=1e-7)


def test_summary_of_one_and_none():
    s = summarize([0.5])
    assert (s.n, s.mean, s.std, s.ci95, s.min, s.max) == (1, 0.5, None, None, 0.5, 0.5)
    assert summarize([]) is None


def test_welch_difference():
    d = welch_difference([1, 2, 3], [2, 3, 4, 5])  # scipy.stats.ttest_ind(..., equal_var=False)
    assert d.estimate == pytest.approx(-1.5)
    assert d.df == pytest.approx(4.959184, abs=1e-6)
    assert d.ci95 == pytest.approx((-3.731711, 0.731711), abs=1e-6)
    assert d.distinguishable is False  # the interval contains 0
    assert welch_difference([0.97, 0.975, 0.972], [0.10, 0.11, 0.098]).distinguishable is True


def test_welch_difference_edge_cases():
    assert welch_difference([0.9], [0.8, 0.85]).ci95 is None  # n = 1: no interval
    assert welch_difference([0.9], [0.8]).distinguishable is None
    exact = welch_difference([0.5, 0.5], [0.4, 0.4])  # bit-identical seeds: an exact difference
    assert exact.ci95 == pytest.approx((0.1, 0.1)) and exact.distinguishable is True
    assert welch_difference([], [0.4]) is None


def test_paired_difference():
    d = paired_difference([1, 2, 3, 4], [0.5, 1.8, 2.6, 3.1])  # scipy.stats.ttest_rel: differences .5 .2 .4 .9
    assert (d.method, d.n_a, d.df) == (PAIRED_NAME, 4, 3)
    assert d.estimate == pytest.approx(0.5)
    half = 3.182446 * math.sqrt(0.26 / 3) / 2  # t(0.975, 3) · std(d) / sqrt(4)
    assert d.ci95 == pytest.approx((0.5 - half, 0.5 + half), abs=1e-6)
    assert d.distinguishable is True


def test_paired_difference_of_a_constant_shift_is_exact_where_welch_sees_noise():
    a, b = [0.5, 0.75, 0.625], [0.25, 0.5, 0.375]  # a = b + 0.25 on every seed (exact in binary)
    paired = paired_difference(a, b)
    assert paired.ci95 == (0.25, 0.25) and math.isinf(paired.df) and paired.distinguishable is True
    same = paired_difference(a, a)
    assert same.ci95 == (0.0, 0.0) and same.distinguishable is False
    assert welch_difference([0.5, 0.9, 0.7], [0.45, 0.85, 0.65]).distinguishable is False  # the seeds' spread


def test_paired_difference_edge_cases():
    assert paired_difference([0.9], [0.8]).ci95 is None
    assert paired_difference([], []) is None
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.9, 0.8], [0.8])
