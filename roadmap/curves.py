"""Runs' learning curves (their history.csv, `roadmap.runs.read_history`): one panel per table row, every seed a
thin line, and whether the row was still rising when its schedule ended -- an underfit budget's tell."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from roadmap.runs import read_history

CURVE_COLUMNS = ["rise_last2", "still_rising"]   # added to a trajectory table whose runs have a history


def load_histories(runs: pd.DataFrame) -> pd.DataFrame:
    """Every finished run's history, long: one line per (row, seed, epoch); empty when no run has one."""
    done = runs[runs["status"] == "finished"]
    frames = [pd.DataFrame(read_history(Path(r.run_dir))).assign(row=r.row, seed=r.seed)
              for r in done.itertuples()]
    frames = [f for f in frames if "epoch" in f]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def rise(history: pd.DataFrame, metric: str = "acc1") -> pd.DataFrame:
    """Per row: `rise_last2`, the mean over seeds of the metric's gain over the last two epochs (last epoch minus
    two before it), and `still_rising` (that gain > 0). A row of fewer than 3 epochs gets neither."""
    def gain(g: pd.DataFrame) -> float:
        curve = g.sort_values("epoch")[metric].to_numpy()
        return float(curve[-1] - curve[-3]) if len(curve) >= 3 else np.nan
    gains = history.groupby(["row", "seed"]).apply(gain, include_groups=False).groupby("row").mean()
    return pd.DataFrame({"rise_last2": gains, "still_rising": (gains > 0).where(gains.notna())})


def add_rise(table: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The table with `CURVE_COLUMNS` (blank for rows whose runs have no history)."""
    per_row = rise(history)
    return table.assign(**{c: table["row"].map(per_row[c]) for c in CURVE_COLUMNS})


def curves_figure(table: pd.DataFrame, history: pd.DataFrame, labels: dict[str, str], title: str,
                  metric: str = "acc1") -> Figure:
    """One panel per table row with a history (in the table's order): each seed's val top-1 by epoch as a thin
    line, their mean thick, and the panel's title saying whether it still rose over the last two epochs."""
    rows = [r for r in table["row"] if r in set(history["row"])]
    per_row = rise(history, metric)
    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, row in zip(axes, rows):
        h = history[history["row"] == row]
        for _, seed in h.groupby("seed"):
            seed = seed.sort_values("epoch")
            ax.plot(seed["epoch"], seed[metric], color="tab:orange", lw=0.8, alpha=0.5)
        mean = h.groupby("epoch")[metric].mean()
        ax.plot(mean.index, mean.to_numpy(), color="tab:orange", lw=2)
        gain = per_row["rise_last2"].get(row, np.nan)
        verdict = ("" if np.isnan(gain) else
                   f"\nstill rising: +{gain:.1f} over last 2 ep" if gain > 0 else f"\nflat: {gain:+.1f} over last 2 ep")
        ax.set_title(labels.get(row, row) + verdict, fontsize=8, color="darkred" if gain > 0 else "black")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    for ax in axes[:len(rows)]:
        ax.tick_params(labelsize=7)
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel(f"val top-1, {metric} (%)", fontsize=9)
    fig.suptitle(textwrap.fill(f"{title}: learning curves (thin: one seed, thick: mean)", 36 * cols),
                 fontsize=10)
    return fig
