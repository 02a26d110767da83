"""The MDMT study: every strategy x backbone x split run through the bundle's own workflows, then collected, tested
and reported (``scripts/run_study.py``, ``scripts/study_stats.py``, ``scripts/study_report.py``).

Modules: :mod:`~bundle.study.grid` (which runs, in which order, in which folder), :mod:`~bundle.study.runner`
(resumable subprocess runs), :mod:`~bundle.study.results` (tidy tables), :mod:`~bundle.study.statistics` (tests
across backbones) and :mod:`~bundle.study.report` (markdown with figures).
"""
