"""Statistics on tables: pandas in, pandas out (group tests, equivalence, PSE, categories).

Examples
--------
>>> from bridge_xr import stats
>>> "run_test" in stats.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "run_test": "dispatch",
        "kruskal_dunn": "group_tests",
        "anova_tukey": "group_tests",
        "mann_whitney": "group_tests",
        "welch_t": "group_tests",
        "spearman": "group_tests",
        "equivalence": "stability",
        "percent_signal_enhancement": "stability",
        "DENSITY_BINS": "categories",
        "density_category": "categories",
    },
)
