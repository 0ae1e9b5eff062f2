"""The roadmap's transitions across budgets: for each step's change, its measured Δ at every budget beside the
paper's, so a reader sees at a glance at which budget a sign comes back. A Δ is only ever taken between two rows
of one setting (`roadmap.report.setting_of`), paired by seed; nothing is compared across budgets or datasets."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from roadmap import paper
from roadmap.stats import paired_delta

# The paper's seven steps (Figure 2): each main row's change over the one before it.
MAIN = ("step00_baseline", "step01_modern_training", "step02_macro_design", "step03_resnextify",
        "step04_inverted_bottleneck", "step05_kernel7", "step06_micro_design", "step07_separate_downsampling")
# Table 10's sub-steps, each inside the main transition it splits (the kernel 5/9/11 side rows are not on it).
SUB = {"step02_macro_design": ("step02a_stage_ratio",), "step03_resnextify": ("step03a_depthwise",),
       "step05_kernel7": ("step05a_move_up",),
       "step06_micro_design": ("step06a_gelu", "step06b_fewer_activations", "step06c_fewer_norms")}
COLUMNS = ["transition", "kind", "from_row", "to_row", "paper_delta"]   # then per setting: n, delta, ci95, agrees


def transitions() -> list[tuple[str, str, str]]:
    """(kind, from, to): the seven main transitions, then each one's chain through its sub-steps."""
    main = [("main", a, b) for a, b in zip(MAIN, MAIN[1:])]
    sub = [("sub", a, b) for _, a, end in main if end in SUB
           for a, b in zip((a, *SUB[end]), (*SUB[end], end))]
    return main + sub


def budget_table(runs: pd.DataFrame, metric: str = "acc1") -> pd.DataFrame:
    """One row per transition measured at any setting; for each setting (in `runs["setting"]`'s order of first
    appearance) the pairs of seeds `n@S`, the paired mean change `delta@S`, its 95 % half-width `ci95@S` and
    whether its sign is the paper's `agrees@S`. Only roadmap rows without design overrides take part."""
    t10 = paper.table10().set_index("step")
    names, t10 = t10["name"], t10["top1"]
    done = runs[(runs["status"] == "finished") & runs[metric].notna() & (runs["variant"].fillna("") == "")]
    per_seed = {key: g.groupby("seed")[metric].mean() for key, g in done.groupby(["setting", "name"])}
    settings = list(dict.fromkeys(runs["setting"]))
    rows = []
    for kind, a, b in transitions():
        row = {"transition": _label(a, b, names[b] if kind == "sub" else None), "kind": kind,
               "from_row": a, "to_row": b, "paper_delta": round(float(t10[b] - t10[a]), 2)}
        for s in settings:
            if (s, a) in per_seed and (s, b) in per_seed:
                delta, ci, n = paired_delta(per_seed[s, a], per_seed[s, b])
                row |= {f"n@{s}": n, f"delta@{s}": delta, f"ci95@{s}": ci,
                        f"agrees@{s}": bool(np.sign(delta) == np.sign(row["paper_delta"])) if n else None}
        rows.append(row)
    table = pd.DataFrame(rows)
    measured = table.filter(like="n@").notna().any(axis=1)
    return table[measured].reset_index(drop=True)


def agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting: how many of the main transitions it measured, and how many of those have the paper's sign."""
    main = table[table["kind"] == "main"]
    settings = [c.removeprefix("n@") for c in table if c.startswith("n@")]
    return pd.DataFrame([{"setting": s, "main_measured": int(main[f"n@{s}"].notna().sum()),
                          "main_agree": int((main[f"agrees@{s}"] == True).sum())}   # noqa: E712 (None: unmeasured)
                         for s in settings])


def budget_figure(table: pd.DataFrame, title: str) -> Figure:
    """Δ per transition (rows, the main ones above a rule, then the sub-steps), one marker per setting with its
    paired 95 % interval, and the paper's Δ as a black bar: a sign flip is a marker on the other side of 0."""
    settings = [c.removeprefix("n@") for c in table if c.startswith("n@")]
    y = np.arange(len(table))
    fig = Figure(figsize=(10, 1.6 + 0.42 * len(table)), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0, color="gray", lw=0.8)
    ax.scatter(table["paper_delta"], y, marker="|", s=220, color="black", linewidths=2, label="paper (ImageNet-1K)",
               zorder=3)
    offsets = np.linspace(-0.25, 0.25, len(settings)) if len(settings) > 1 else [0.0]
    common, labels = _distinct(settings)
    for s, label, dy, color in zip(settings, labels, offsets,
                                   ("tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown")):
        has = table[f"n@{s}"].notna().to_numpy()
        ax.errorbar(table[f"delta@{s}"][has], y[has] + dy, xerr=table[f"ci95@{s}"][has].fillna(0), fmt="o",
                    color=color, capsize=3, ms=4, label=label)
    subs = np.flatnonzero((table["kind"] == "sub").to_numpy())
    if subs.size and subs[0] > 0:
        ax.axhline(subs[0] - 0.5, color="gray", lw=0.8)
    ax.set_yticks(y, table["transition"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set_xlabel("Δ top-1 over the previous row (points): mean over seeds, paired 95 % CI")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(len(settings) + 1, 3), fontsize=8, frameon=False,
               title=f"setting ({common})" if common else "setting", title_fontsize=8)
    fig.suptitle(title)
    return fig


def budget_markdown(table: pd.DataFrame, title: str, dirs: Sequence[str | Path], metric: str) -> str:
    """The table with one 'Δ [CI] ✓/✗' cell per setting, and the agreement count under it; it names the run
    folders it was read from, so that it can be regenerated from them."""
    settings = [c.removeprefix("n@") for c in table if c.startswith("n@")]

    def cell(r: pd.Series, s: str) -> str:
        if pd.isna(r[f"n@{s}"]):
            return ""
        ci = "" if pd.isna(r[f"ci95@{s}"]) else (f" [{r[f'delta@{s}'] - r[f'ci95@{s}']:+.1f}, "
                                                 f"{r[f'delta@{s}'] + r[f'ci95@{s}']:+.1f}]")
        return f"{r[f'delta@{s}']:+.1f}{ci} {'✓' if r[f'agrees@{s}'] else '✗'} (n={int(r[f'n@{s}'])})"
    shown = pd.DataFrame({"transition": table["transition"], "paper Δ": table["paper_delta"].map("{:+.2f}".format),
                          **{s: [cell(r, s) for _, r in table.iterrows()] for s in settings}})
    agree = agreement(table)
    return "\n".join([
        f"# {title}", "",
        f"Read from: {', '.join(f'`{d}`' for d in dirs)}. Metric: `{metric}` (%).", "",
        "Each cell: Δ top-1 (points) over the previous row at that setting, mean over the seeds both rows have, "
        "[its paired 95 % interval], ✓ when its sign is the paper's, and the number of seed pairs. No Δ is taken "
        "across settings.", "",
        shown.to_markdown(index=False), "",
        "Main transitions with the paper's sign:", "",
        *(f"- {r.setting}: {r.main_agree} of {r.main_measured} measured" for r in agree.itertuples()), "",
    ])


def _distinct(settings: list[str]) -> tuple[str, list[str]]:
    """What all settings share, and what sets each apart: a legend reads 'bf16-mixed' and '32-true' under
    'cpu_replay: imagenette 64px 6ep w0.25 b64', not two labels 60 characters long that differ at the end."""
    words = [s.split() for s in settings]
    shared = [w for w in words[0] if all(w in other for other in words)] if len(settings) > 1 else []
    return " ".join(shared), [" ".join(w for w in ws if w not in shared) for ws in words]


def _label(a: str, b: str, change: str | None = None) -> str:
    """step01_modern_training, step02a_stage_ratio -> '01→02a stage ratio': the two rows' numbers and the
    change's name, as its config file names it or, for a sub-step, as Table 10 does ('02a→02 patchify stem')."""
    (na, _), (nb, name) = (s.removeprefix("step").split("_", 1) for s in (a, b))
    return f"{na}→{nb} {change or name.replace('_', ' ')}"
