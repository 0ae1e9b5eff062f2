"""The two statistics every table here rests on: a 95 % t-interval, and a change between two rows paired by seed."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def ci95(values: pd.Series) -> float:
    """Half-width of the 95 % t-interval of the mean; NaN below two values."""
    n = values.count()
    return float(stats.t.ppf(0.975, n - 1) * stats.sem(values.dropna())) if n >= 2 else np.nan


def paired_delta(before: pd.Series, after: pd.Series) -> tuple[float, float, int]:
    """(mean change, half-width of its 95 % interval, pairs) over the seeds both per-seed series have: the seeds
    share data order and initialisation draws, so pairing takes their common part out of the noise."""
    diff = (after - before).dropna()
    return (float(diff.mean()) if len(diff) else np.nan), ci95(diff), len(diff)
