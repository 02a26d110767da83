"""Tests across backbones: is a strategy better than a baseline, do the strategies differ, and does one of them
depend more on the backbone than another?

The unit of replication is the backbone (methods.md, section 1: one-sided paired t-test and Wilcoxon across the 18
backbones, each scored on its test predictions pooled over folds). The input is the tidy ``pooled_metrics`` table of
:mod:`bundle.study.results` (columns strategy, backbone, protocol, metric, value); a backbone enters a test only when
every strategy compared has a finite value for it.

A study can be small (a demo with 2 backbones) or degenerate (two strategies with identical scores). No test then
raises or returns a meaningless number: its ``p`` is ``None`` and a ``note`` says why, and a computed p-value that
cannot be small whatever the data (few backbones) carries a note with the smallest attainable p. Every result names
its method, with the direction of the one-sided alternative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["compare_pair", "friedman", "spread", "study_statistics", "to_markdown"]

#: Differences smaller than this are ties: the metrics are rates of at most a few thousand patients, so a smaller
#: difference is floating-point noise (0.7 - 0.6 != 0.8 - 0.7), not a measured one.
_TOLERANCE = 1e-9

#: Below this many backbones the Friedman chi-square approximation of scipy is rough.
_FRIEDMAN_ROUGH_BELOW = 10


def _wide(pooled: pd.DataFrame, protocol: str, metric: str, strategies: Sequence[str]) -> pd.DataFrame:
    """Backbones x strategies values of one protocol and metric, only backbones with a finite value for every one."""
    rows = pooled[(pooled["protocol"] == protocol) & (pooled["metric"] == metric)]
    rows = rows[rows["strategy"].isin(strategies)]
    wide = rows.pivot_table(index="backbone", columns="strategy", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(strategies)).astype(float)
    return wide[np.isfinite(wide).all(axis=1)].sort_index()


def _skipped(method: str, note: str) -> dict[str, Any]:
    """A test that was not run: no statistic, no p, and why."""
    return {"method": method, "statistic": None, "p": None, "note": note}


def _paired_t(differences: np.ndarray, direction: str) -> dict[str, Any]:
    """One-sided paired t-test of ``mean(differences) > 0``."""
    method = f"paired t-test, one-sided (H1: {direction})"
    if differences.size == 0:
        return _skipped(method, "no backbone has both strategies")
    if differences.size < 2:
        return _skipped(method, f"needs at least 2 backbones, got {differences.size}")
    if np.all(np.abs(differences) <= _TOLERANCE):
        return _skipped(method, "all differences are zero")
    if np.ptp(differences) <= _TOLERANCE:
        return _skipped(
            method, f"all differences are equal ({differences[0]:+.3f}): no variance, the t statistic is undefined"
        )
    result = stats.ttest_1samp(differences, 0.0, alternative="greater")  # the paired test, on the differences
    return {"method": method, "statistic": float(result.statistic), "p": float(result.pvalue), "note": ""}


def _wilcoxon(differences: np.ndarray, direction: str) -> dict[str, Any]:
    """One-sided Wilcoxon signed-rank test of the differences being shifted above 0; zero differences dropped."""
    nonzero = differences[np.abs(differences) > _TOLERANCE]
    exact = nonzero.size <= 50
    method = f"Wilcoxon signed-rank test, one-sided (H1: {direction}), {'exact' if exact else 'normal approximation'}"
    if differences.size == 0:
        return _skipped(method, "no backbone has both strategies")
    if nonzero.size == 0:
        return _skipped(method, "all differences are zero")
    result = stats.wilcoxon(nonzero, alternative="greater", method="exact" if exact else "approx")
    notes = []
    if nonzero.size < differences.size:
        notes.append(f"{differences.size - nonzero.size} zero difference(s) dropped")
    smallest = 0.5**nonzero.size
    if smallest > 0.01:
        notes.append(f"with n = {nonzero.size} the smallest attainable p is {smallest:.3g}")
    if exact and np.any(np.diff(np.sort(np.abs(nonzero))) <= _TOLERANCE):
        notes.append("tied |differences|: the exact p is approximate")
    return {"method": method, "statistic": float(result.statistic), "p": float(result.pvalue), "note": "; ".join(notes)}


def compare_pair(pooled: pd.DataFrame, protocol: str, metric: str, better: str, baseline: str) -> dict[str, Any]:
    """One-sided paired tests across backbones that ``better`` scores higher than ``baseline``.

    Args:
        pooled: tidy pooled metrics (strategy, backbone, protocol, metric, value).
        protocol: ``cv`` or ``loco``.
        metric: a metric name (higher is better).
        better: the strategy the alternative hypothesis favours.
        baseline: the strategy it is compared with.

    Returns:
        ``better``, ``baseline``, ``protocol``, ``metric``, ``n`` (paired backbones), ``mean_difference`` (``None``
        without pairs) and ``tests``: ``paired_t`` and ``wilcoxon``, each with ``method``, ``statistic``, ``p`` and
        ``note``.
    """
    wide = _wide(pooled, protocol, metric, [better, baseline])
    differences = (wide[better] - wide[baseline]).to_numpy()
    direction = f"{better} > {baseline}"
    return {
        "better": better,
        "baseline": baseline,
        "protocol": protocol,
        "metric": metric,
        "n": int(differences.size),
        "mean_difference": float(differences.mean()) if differences.size else None,
        "tests": {"paired_t": _paired_t(differences, direction), "wilcoxon": _wilcoxon(differences, direction)},
    }


def friedman(pooled: pd.DataFrame, protocol: str, metric: str, strategies: Sequence[str]) -> dict[str, Any]:
    """Friedman test of any difference among ``strategies``, backbones as blocks.

    Args:
        pooled: tidy pooled metrics.
        protocol: ``cv`` or ``loco``.
        metric: a metric name.
        strategies: at least 3 strategies (with 2, :func:`compare_pair` is the test).

    Returns:
        ``protocol``, ``metric``, ``strategies``, ``n`` (complete backbones), ``method``, ``statistic``, ``p``,
        ``note``.
    """
    strategies = list(strategies)
    wide = _wide(pooled, protocol, metric, strategies)
    result = {"protocol": protocol, "metric": metric, "strategies": strategies, "n": len(wide)}
    method = "Friedman test over strategies, backbones as blocks (chi-square approximation)"
    if len(strategies) < 3:
        return result | _skipped(method, f"needs at least 3 strategies, got {len(strategies)}: use the paired tests")
    if len(wide) < 2:
        return result | _skipped(method, f"needs at least 2 backbones with every strategy, got {len(wide)}")
    values = wide.to_numpy()
    if np.all(np.ptp(values, axis=1) <= _TOLERANCE):
        return result | _skipped(method, "the strategies are equal on every backbone")
    test = stats.friedmanchisquare(*values.T)
    rough = len(wide) < _FRIEDMAN_ROUGH_BELOW
    note = f"the chi-square approximation is rough at n = {len(wide)} backbones" if rough else ""
    return result | {"method": method, "statistic": float(test.statistic), "p": float(test.pvalue), "note": note}


def spread(pooled: pd.DataFrame, protocol: str, metric: str, strategies: Sequence[str]) -> dict[str, Any]:
    """Brown-Forsythe test of equal spread across backbones: does a strategy's score depend more on the backbone?

    The paper reports a mean over backbones; a strategy that is better on average but erratic across backbones is a
    weaker recommendation. The Brown-Forsythe test (Levene's test on deviations from the median) is robust to the
    skewed, bounded distributions of rates. It treats the strategies as independent groups although they share
    backbones, so its p-value is approximate.

    Args:
        pooled: tidy pooled metrics.
        protocol: ``cv`` or ``loco``.
        metric: a metric name.
        strategies: at least 2 strategies.

    Returns:
        ``protocol``, ``metric``, ``strategies``, ``n`` (complete backbones), ``std`` (strategy -> SD over
        backbones, ``None`` below 2), ``method``, ``statistic``, ``p``, ``note``.
    """
    strategies = list(strategies)
    wide = _wide(pooled, protocol, metric, strategies)
    std = {name: float(wide[name].std(ddof=1)) if len(wide) > 1 else None for name in strategies}
    result = {"protocol": protocol, "metric": metric, "strategies": strategies, "n": len(wide), "std": std}
    method = "Brown-Forsythe test of equal variance across backbones (Levene, median-centred)"
    if len(strategies) < 2:
        return result | _skipped(method, f"needs at least 2 strategies, got {len(strategies)}")
    if len(wide) < 3:
        return result | _skipped(method, f"needs at least 3 backbones with every strategy, got {len(wide)}")
    deviations = np.abs(wide - wide.median()).to_numpy()
    if np.all(deviations <= _TOLERANCE):
        return result | _skipped(method, "zero spread: every strategy scores the same on every backbone")
    test = stats.levene(*wide.to_numpy().T, center="median")
    return result | {"method": method, "statistic": float(test.statistic), "p": float(test.pvalue), "note": ""}


def _present(pooled: pd.DataFrame, names: Iterable[str]) -> list[str]:
    """The named strategies that the study has results for, once each, in the order named."""
    available = set(pooled["strategy"])
    return [name for name in dict.fromkeys(names) if name in available]


def study_statistics(
    pooled: pd.DataFrame, comparisons: Sequence[tuple[str, str]], metrics: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every test of a study, per protocol and metric.

    Args:
        pooled: tidy pooled metrics (``pooled_metrics.csv``).
        comparisons: ``(better, baseline)`` pairs for :func:`compare_pair`.
        metrics: the metrics to test.

    Returns:
        ``pairwise`` (by comparison, protocol, metric), ``friedman`` and ``spread`` (by protocol, metric) over the
        strategies named in the comparisons that the study ran.
    """
    protocols = sorted(pooled["protocol"].unique())
    strategies = _present(pooled, (name for pair in comparisons for name in pair))
    return {
        "pairwise": [
            compare_pair(pooled, protocol, metric, better, baseline)
            for better, baseline in comparisons
            for protocol in protocols
            for metric in metrics
        ],
        "friedman": [friedman(pooled, p, m, strategies) for p in protocols for m in metrics],
        "spread": [spread(pooled, p, m, strategies) for p in protocols for m in metrics],
    }


def _p(test: Mapping[str, Any]) -> str:
    """A p-value for a table cell; ``-`` when the test was not run."""
    return "-" if test["p"] is None else f"{test['p']:.3g}"


def _notes(*tests: Mapping[str, Any]) -> str:
    """The tests' notes joined for one table cell."""
    return "; ".join(test["note"] for test in tests if test["note"])


def to_markdown(result: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The results of :func:`study_statistics` as markdown tables, notes beside the p-values they qualify."""
    lines = ["## Paired tests across backbones (one-sided)", ""]
    lines += ["| better | baseline | protocol | metric | n | mean difference | t-test p | Wilcoxon p | notes |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for row in result["pairwise"]:
        t_test, wilcoxon = row["tests"]["paired_t"], row["tests"]["wilcoxon"]
        difference = "-" if row["mean_difference"] is None else f"{row['mean_difference']:+.3f}"
        lines.append(
            f"| {row['better']} | {row['baseline']} | {row['protocol']} | {row['metric']} | {row['n']} | {difference} "
            f"| {_p(t_test)} | {_p(wilcoxon)} | {_notes(t_test, wilcoxon)} |"
        )
    for key, title in (("friedman", "Friedman test over strategies"), ("spread", "Spread across backbones")):
        lines += ["", f"## {title}", "", "| protocol | metric | strategies | n | statistic | p | notes |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for row in result[key]:
            statistic = "-" if row["statistic"] is None else f"{row['statistic']:.3g}"
            lines.append(
                f"| {row['protocol']} | {row['metric']} | {', '.join(row['strategies'])} | {row['n']} | {statistic} "
                f"| {_p(row)} | {row['note']} |"
            )
    methods = {test["method"] for row in result["pairwise"] for test in row["tests"].values()}
    methods |= {row["method"] for key in ("friedman", "spread") for row in result[key]}
    lines += ["", "Methods: " + "; ".join(sorted(methods)) + ".", ""]
    return "\n".join(lines)
