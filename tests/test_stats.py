"""Statistics over seeds on hand-made numbers: known mean, std, t quantiles, intervals, Welch differences."""

import math

import pytest

from common.stats import summarize, t_quantile, welch_difference


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
