"""TODO docstring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: the paper's density categories (Figure 4J-K): upper edges of 0-5, 5-25, 25-50, 50-75, 75-100 %
DENSITY_BINS = (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)


def density_category(fraction: np.ndarray, bins: Sequence[float] = DENSITY_BINS) -> pd.Categorical:
    """``w/o`` for exactly 0, then ``a-b%`` for ``(a, b]``; NaN stays missing.

    Parameters
    ----------
    fraction : ndarray
        Volume fractions 0-1.
    bins : sequence of float
        Category edges.

    Returns
    -------
    pandas.Categorical

    Examples
    --------
    >>> import numpy as np
    >>> list(density_category(np.array([0.0, 0.03, 0.3])))
    ['w/o', '0-5%', '25-50%']
    """
    edges = [float(b) for b in bins]
    labels = ["w/o"] + [
        f"{edges[i] * 100:g}-{edges[i + 1] * 100:g}%" for i in range(len(edges) - 1)
    ]
    f = np.asarray(fraction, dtype=np.float64)
    code = np.full(f.shape, -1, dtype=np.int64)
    code[f <= edges[0]] = 0
    for i in range(len(edges) - 1):
        code[(f > edges[i]) & (f <= edges[i + 1] + 1e-12)] = i + 1
    code[~np.isfinite(f)] = -1
    return pd.Categorical.from_codes(code, categories=labels, ordered=True)
