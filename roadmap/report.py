"""Runs -> the roadmap trajectory beside the paper's: a table (CSV, Markdown) and a chart in the spirit of Fig. 2.

Proxy runs (small data, small images, few epochs) are not on the paper's ImageNet scale, so the report compares
steps rather than absolute numbers: each roadmap row's change over the previous measured row, with a 95 %
interval paired by seed, and whether its sign agrees with the paper's change.

    python -m roadmap.report outputs/trajectory outputs/kernel_sweep --out results/imagewoof64 [--wandb]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import wandb
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from roadmap import paper
from roadmap.budgets import budget_figure, budget_markdown, budget_table
from roadmap.curves import CURVE_COLUMNS, add_rise, curves_figure, load_histories
from roadmap.stats import ci95
from roadmap.runs import (OVERRIDES, RECORD, SCHEMA, Summary, UnreadableSummaryError, design_overrides,
                          parse_run_dir, run_dirs, split_overrides)

log = logging.getLogger(__name__)
STATUS_ORDER = ("finished", "failed", "interrupted", "unfinished")
KINDS = ("roadmap", "variant", "baseline")  # table order: the paper's rows, other variants of its steps, baselines
# The paper's kernel sweep (its rows step05_kernel5/9/11) is step05_kernel7 trained with this override.
KERNEL_STEP, KERNEL_OVERRIDE = "step05_kernel7", re.compile(r"model\.kernel_size=(\d+)")
COLUMNS = ["row", "kind", "step", "variant", "paper_row", "n", "mean_top1", "std_top1", "ci95_top1", "prev_row",
           "delta_prev", "delta_prev_ci95", "paper_top1", "paper_delta", "sign_agrees", "params_m", "gmacs",
           "gmacs_224", "paper_gmacs", "train_img_per_s", "wall_s", "data", "image_size", "epochs", "status"]
# Markdown shows these, rounded to so many decimals (None: not a number)
MARKDOWN = {"row": None, "n": None, "mean_top1": 2, "std_top1": 2, "ci95_top1": 2, "delta_prev": 2,
            "delta_prev_ci95": 2, "paper_top1": 2, "paper_delta": 2, "sign_agrees": None, "params_m": 2,
            "gmacs": 3, "gmacs_224": 2, "train_img_per_s": 0, "wall_s": 0, "status": None}
# the runs' own (trainer.efficiency=true), else with a bench CSV (`add_efficiency`)
EFFICIENCY = {"model_img_per_s": 0, "job_efficiency": 2}
CURVES = dict(zip(CURVE_COLUMNS, (2, None)))   # where the runs kept a history (roadmap.curves)
DEFAULT_TITLE = "ResNet-50 → ConvNeXt-T roadmap: paper vs measured"
UNKNOWN_SETTING = "unknown (no summary)"


def load_runs(dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Every run under `dirs`, one row each, whatever became of it.

    Finished, failed and interrupted runs come from their summary.json; a run directory with `.hydra/` or
    `checkpoints/` but no summary gets status 'unfinished' and what its path
    (<sweep>/<data>/<name>[,<overrides>]/seed<N>) tells. `run_dir` is where the run lies now.
    """
    steps = set(paper.table10()["step"])
    records = []
    for root in map(Path, dirs):
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        summaries, started = run_dirs(root)
        found, unreadable = [], []
        for path in summaries:
            try:
                found.append(_record(path))
            except UnreadableSummaryError as e:   # named, listed as unfinished; the other runs are reported
                log.warning("%s: listed as unfinished", e)
                unreadable.append({**_unfinished(path.parent, steps), "error": str(e)})
        for r, label in zip(found, settings(found)):
            r["setting"] = label
        # a run without a readable summary belongs to its study's setting, when the study has one
        setting = found[0]["setting"] if len({r["setting"] for r in found}) == 1 else UNKNOWN_SETTING
        records += found + [{**r, "setting": setting} for r in unreadable] + [
            {**_unfinished(d, steps), "setting": setting} for d in started]
    runs = pd.DataFrame(records)
    runs = runs.reindex(columns=list(dict.fromkeys([*SCHEMA, *runs.columns])))
    runs = runs.astype({"seed": "Int64", "image_size": "Int64", "epochs": "Int64"})
    return runs.drop_duplicates("run_dir", ignore_index=True)  # overlapping dirs find a run twice


def export_runs(dirs: Sequence[str | Path], dest: str | Path) -> int:
    """Copy each ended run's record (`RECORD`: summary and exact config, no checkpoints or logger files) under
    `dest`, at its path below its sweep directory, so `dest` reads like a sweep; returns the runs copied."""
    copied = 0
    for root in map(Path, dirs):
        for summary in run_dirs(root)[0]:
            rel = summary.parent.relative_to(root)
            for name in RECORD:
                if (summary.parent / name).is_file():
                    (Path(dest) / rel / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(summary.parent / name, Path(dest) / rel / name)
            copied += 1
    return copied


def _record(path: Path) -> dict:
    summary = Summary.read(path)
    return {**summary.row(), "run_dir": str(path.parent.resolve()), "setting": _setting_parts(summary, path.parent)}


def _setting_parts(summary: Summary, run_dir: Path) -> dict[str, str]:
    """What a run's number is comparable within (`settings`), by the config key each part comes from."""
    config = summary.config or {}
    parts = {key: fmt.format(value) for key, value, fmt in (
        ("data.name", summary.data, "{}"), ("data.image_size", summary.image_size, "{}px"),
        ("trainer.max_epochs", summary.epochs, "{}ep"), ("model.width_mult", config.get("model.width_mult"), "w{}"),
        ("data.batch_size", config.get("data.batch_size"), "b{}"), ("trainer.precision", summary.precision, "{}"))
        if value is not None}
    overrides = run_dir / OVERRIDES   # summaries from before summary.budget: the command's +budget=
    budget = summary.budget or (next((o.partition("=")[2] for o in OmegaConf.load(overrides)
                                      if o.startswith("+budget=")), None) if overrides.is_file() else None)
    return {"+budget": budget, **parts} if budget else parts


def settings(records: list[dict]) -> list[str]:
    """Each run's setting, e.g. 'cpu_replay: imagenette 64px 6ep w0.25 b64 bf16-mixed': its budget (`+budget=`,
    if the command named one), data, image size, epochs, width multiplier, batch and precision -- but none of the
    keys some run's variant overrides, which the table compares as rows (e.g. trainer.precision=32-true)."""
    varied = {o.partition("=")[0] for r in records for o in split_overrides(r.get("variant") or "")}
    labels = []
    for r in records:
        parts = {k: v for k, v in r["setting"].items() if k not in varied}
        budget = parts.pop("+budget", None)
        labels.append((f"{budget}: " if budget else "") + " ".join(parts.values()))
    return labels


def _unfinished(run_dir: Path, steps: set[str]) -> dict:
    where = parse_run_dir(run_dir)
    return {**where, "status": "unfinished", "error": "no summary.json: still running, or killed",
            "step": where["name"] if where["name"] in steps else None, "run_dir": str(run_dir.resolve())}


def trajectory_table(runs: pd.DataFrame, metric: str = "acc1") -> pd.DataFrame:
    """One row per (name, variant): seeds aggregated, beside the paper's row it replays.

    Rows come in the paper's order (Table 10), then other variants, then baselines (runs without a roadmap
    step, compared with Table 1 by timm model name). `delta_prev` is the change over the previous measured
    roadmap row (`prev_row`; kernel 5/9/11 rows branch off the chain, which runs 05a -> kernel 7 -> 06a);
    its interval pairs the seeds both rows have.
    """
    t10 = paper.table10().set_index("step")
    runs = runs.assign(variant=runs["variant"].fillna(""), row=_row_keys(runs))
    rows, per_seed = [], {}
    for key, g in runs.groupby("row", sort=False):
        done = g[(g["status"] == "finished") & g[metric].notna()]
        per_seed[key] = done.groupby("seed")[metric].mean()
        name, variant = g["name"].iloc[0], g["variant"].iloc[0]
        step = g["step"].dropna().iloc[0] if g["step"].notna().any() else None
        target = _paper_step(step, variant)
        if step is None:
            model, data = (g[c].dropna().iloc[0] if g[c].notna().any() else None for c in ("model", "data"))
            kind, ref = "baseline", paper.baseline(model, name, data)
        else:
            kind, ref = ("roadmap", t10.loc[target]) if target in t10.index else ("variant", None)
        rows.append({
            "row": key, "kind": kind, "step": step, "variant": variant,
            "paper_row": None if ref is None else (target if kind == "roadmap" else ref["name"]),
            "n": len(done), "mean_top1": done[metric].mean(), "std_top1": done[metric].std(),
            "ci95_top1": ci95(done[metric]), "prev_row": None, "delta_prev": np.nan, "delta_prev_ci95": np.nan,
            "paper_top1": np.nan if ref is None else ref["top1"], "paper_delta": np.nan, "sign_agrees": None,
            "params_m": g["params"].mean() / 1e6, "gmacs": g["gmacs"].mean(), "gmacs_224": g["gmacs_224"].mean(),
            "paper_gmacs": np.nan if ref is None else ref.get("gmacs", np.nan),
            "train_img_per_s": done["train_img_per_s"].mean(), "wall_s": done["wall_s"].mean(),
            "model_img_per_s": done["model_img_per_s"].mean(), "job_efficiency": done["job_efficiency"].mean(),
            **{c: "/".join(dict.fromkeys(g[c].dropna().astype(str))) for c in ("data", "image_size", "epochs")},
            "status": ", ".join(f"{k} {s}" for s, k in sorted(g["status"].value_counts().items(), key=_status_rank)),
        })
    order = {"roadmap": list(t10.index), "variant": list(t10.index), "baseline": list(paper.baselines()["name"])}
    rows.sort(key=lambda r: (KINDS.index(r["kind"]), _position(order[r["kind"]], r), r["row"]))
    # Kernel 5/9/11 are side rows of step 05: compared with the chain, but the chain runs 05a -> k7 -> 06a.
    side = {f"step05_kernel{k}" for k in (5, 9, 11)}
    prev = None
    for r in (r for r in rows if r["kind"] == "roadmap" and r["n"] > 0):
        if prev is not None:
            r["prev_row"] = prev["row"]
            r["delta_prev"] = r["mean_top1"] - prev["mean_top1"]
            r["delta_prev_ci95"] = ci95((per_seed[r["row"]] - per_seed[prev["row"]]).dropna())
            r["paper_delta"] = r["paper_top1"] - prev["paper_top1"]
            if not np.isnan(r["paper_delta"]):
                r["sign_agrees"] = bool(np.sign(r["delta_prev"]) == np.sign(r["paper_delta"]))
        if r["paper_row"] not in side:
            prev = r
    table = pd.DataFrame(rows, columns=[*COLUMNS, *EFFICIENCY])
    return table if table["job_efficiency"].notna().any() else table[COLUMNS]   # measured in the runs, if at all


def add_efficiency(table: pd.DataFrame, bench_csv: str | Path) -> pd.DataFrame:
    """Each row's job efficiency where its runs did not measure their own (`trainer.efficiency=true`): its runs'
    train img/s (data loading, logging and all) over the model's own train img/s in `python -m roadmap.bench
    --csv` at the same model, image size, batch and precision. A CSV of several bench invocations gives each
    model its median, as one invocation on few cores can be far off (results/cpu_replay/README.md)."""
    bench = pd.read_csv(bench_csv)
    ours = bench[bench["role"] == "ours"]
    model = ours.groupby(ours["model"].str.rsplit("/", n=1).str[-1])["train_img_s"].median().to_dict()
    if "job_efficiency" in table:
        missing = table["job_efficiency"].isna()
        speed = table["row"].map(model).where(missing, table["model_img_per_s"])
        return table.assign(model_img_per_s=speed, job_efficiency=table["job_efficiency"].where(
            ~missing, table["train_img_per_s"] / speed))
    table = table.assign(model_img_per_s=table["row"].map(model))
    return table.assign(job_efficiency=table["train_img_per_s"] / table["model_img_per_s"])


def study_efficiency(table: pd.DataFrame) -> float:
    """The study's job efficiency: the share of its rows' training time the models alone would take, sum of
    1 / model img/s over sum of 1 / job img/s (its rows train the same images). Slow rows weigh as much as they
    take; the mean of the rows' ratios would weigh each row alike."""
    timed = table.dropna(subset=["train_img_per_s", "model_img_per_s"])
    return float((1 / timed["model_img_per_s"]).sum() / (1 / timed["train_img_per_s"]).sum())


def _short_path(override: str) -> str:
    """key=<a path> as key=…/<its last 3 parts> (e.g. a model.pretrained checkpoint), for a chart's labels."""
    key, _, value = override.partition("=")
    parts = value.split("/")
    return f"{key}=…/{'/'.join(parts[-3:])}" if len(parts) > 4 else override


def _paper_step(step: str | None, variant: str) -> str | None:
    """The Table 10 row a run replays: its step, or step05_kernel<K> for the kernel sweep's override."""
    design = ",".join(design_overrides(variant))
    if not design:
        return step
    match = KERNEL_OVERRIDE.fullmatch(design)
    return f"step05_kernel{match[1]}" if step == KERNEL_STEP and match else None


def _position(order: list[str], row: dict) -> int:
    key = row["step"] if row["kind"] == "variant" else row["paper_row"]
    return order.index(key) if key in order else len(order)


def _status_rank(item: tuple[str, int]) -> int:
    return STATUS_ORDER.index(item[0]) if item[0] in STATUS_ORDER else len(STATUS_ORDER)


def row_labels(table: pd.DataFrame) -> list[str]:
    """Each table row's label: a paper row's name in Table 10, a baseline's in Table 1, else the run's name and
    design overrides, wrapped (budget overrides are the same on every row). Two rows never share a label: a
    repeated one (e.g. step05_kernel7 run again with model.kernel_size=7) gets its design overrides added."""
    names = paper.table10().set_index("step")["name"]

    def spelled(r: Any) -> str:
        return textwrap.fill(" ".join([r.row.split(",")[0], *map(_short_path, design_overrides(r.variant))]), 40,
                             break_long_words=False)
    labels = [names[r.paper_row] if r.kind == "roadmap"
              else r.paper_row if r.kind == "baseline" and isinstance(r.paper_row, str)   # no reference: NaN
              else spelled(r) for r in table.itertuples()]
    repeated = {label for label in labels if labels.count(label) > 1}
    # its design overrides tell it apart, else (a budget override such as trainer.precision) all of them
    return [label if label not in repeated or not r.variant
            else f"{label}\n({', '.join(design_overrides(r.variant) or split_overrides(r.variant))})"
            for label, r in zip(labels, table.itertuples())]


def trajectory_figure(table: pd.DataFrame, runs: pd.DataFrame, title: str | None = None,
                      metric: str = "acc1") -> Figure:
    """Two panels sharing the rows (step 00 on top, the ViT baselines below a rule): the paper's ImageNet-1K
    top-1, its roadmap points joined in order, and ours: every seed a small dot, the mean with its 95 % CI.

    Proxies train on small data, so each panel has its own x scale. GMACs sit above each point: the paper's at
    224 px, ours at the run's image size. The measured panel has a dotted line at chance (100 / classes).
    """
    table = table.reset_index(drop=True)
    labels = row_labels(table)
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    size = _joined(table["image_size"])
    context = ", ".join(f"{v}{unit}" for v, unit in ((_joined(table["data"]), ""), (size, " px"),
                                                     (_joined(table["epochs"]), " ep")) if v)
    fig = Figure(figsize=(12, 1.8 + 0.42 * max(len(table), 1) * max(1, lines / 2)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(table))
    chain = (table["kind"] == "roadmap").to_numpy()
    left.plot(table["paper_top1"][chain], y[chain], "-", color="tab:blue", alpha=0.4)  # the paper's trajectory
    _panel(left, y, table["paper_top1"], None, table["paper_gmacs"], "tab:blue", table["kind"])
    rows = runs.assign(row=_row_keys(runs))
    done = rows[(rows["status"] == "finished") & rows[metric].notna()]
    position = dict(zip(table["row"], y))
    seeds = done[done["row"].isin(position)]
    right.scatter(seeds[metric], seeds["row"].map(position) + 0.18, s=9, color="tab:orange", alpha=0.6,
                  linewidths=0, gid="seeds")
    _panel(right, y, table["mean_top1"], table["ci95_top1"].fillna(0), table["gmacs"], "tab:orange", table["kind"])
    chance = 100.0 / runs["num_classes"].dropna().iloc[0] if runs.get("num_classes", pd.Series()).notna().any() \
        else None
    if chance is not None:   # explained in the axis label, where no point's label can run into it
        right.axvline(chance, ls=":", color="gray")
    for yi in y[table["mean_top1"].isna()]:
        right.text(0.01, yi, table["status"][yi], transform=right.get_yaxis_transform(), va="center",
                   fontsize=7, color="gray")
    first_baseline = np.flatnonzero((table["kind"] == "baseline").to_numpy())
    if first_baseline.size and first_baseline[0] > 0:
        for ax in (left, right):
            ax.axhline(first_baseline[0] - 0.5, color="gray", lw=0.8)
    if table["paper_top1"].notna().any():
        _pad(left, 3.0)   # the paper's rows can lie within 0.1 points (kernel 7/9): a span that small reads as large
    else:   # variants the paper never trained: say so instead of drawing an empty axis
        left.set_xticks([])
        left.text(0.5, 0.5, "no published row for these runs", transform=left.transAxes, ha="center",
                  color="gray")
    left.set_yticks(y, labels)
    left.set_ylim(len(table) - 0.5, -0.5)  # step 00 on top
    left.set_xlabel(f"{paper.reference_label(_joined(table['data']))} (%)\nGMACs at 224 px")
    right.set_xlabel(f"measured top-1, {metric} (%): mean ± 95 % CI over seeds\nsmall dots: one seed each"
                     + (f"; dotted line: chance ({chance:.0f} %)" if chance is not None else "") +
                     f"\nGMACs at {size or 'the run'} px" + (f" — {context}" if context else ""))
    fig.suptitle(title or DEFAULT_TITLE)
    return fig


def plot_trajectory(table: pd.DataFrame, runs: pd.DataFrame, path: str | Path, title: str | None = None,
                    metric: str = "acc1") -> Path:
    """`trajectory_figure` saved to `path` (a bare Figure renders with Agg, no pyplot state)."""
    trajectory_figure(table, runs, title, metric).savefig(path, dpi=150)
    return Path(path)


def _row_keys(runs: pd.DataFrame) -> pd.Series:
    """A run's table row: its name, and its variant if it has one."""
    variant = runs["variant"].fillna("")
    return runs["name"].where(variant == "", runs["name"] + "," + variant)


def _panel(ax: Axes, y: np.ndarray, top1: pd.Series, err: pd.Series | None, gmacs: pd.Series, color: str,
           kinds: pd.Series) -> None:
    for marker, baseline in (("o", False), ("s", True)):   # baselines as squares
        has = (top1.notna() & ((kinds == "baseline") == baseline)).to_numpy()
        ax.errorbar(top1[has], y[has], xerr=None if err is None else err[has], fmt=marker, color=color, capsize=3)
    has = top1.notna().to_numpy()
    for yi, x, g in zip(y[has], top1[has], gmacs[has]):
        if pd.notna(g):
            ax.annotate(f"{g:.3g} GMACs", (x, yi), xytext=(0, 5), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7, color="dimgray")
    ax.margins(x=0.12)  # room for the GMACs labels at the edges
    ax.grid(axis="x", alpha=0.3)


def _pad(ax: Axes, span: float) -> None:
    """Widen the x axis to at least `span` around its centre."""
    lo, hi = ax.get_xlim()
    if hi - lo < span:
        ax.set_xlim((lo + hi - span) / 2, (lo + hi + span) / 2)


def _joined(values: pd.Series) -> str:
    return "/".join(dict.fromkeys(v for v in values.dropna() if v))


def write_report(dirs: Sequence[str | Path], out: str | Path, metric: str = "acc1",
                 title: str | None = None, to_wandb: bool = False, bench: str | Path | None = None,
                 setting: str | None = None, budgets_only: bool = False) -> dict[str, Path]:
    """Write trajectory.csv, trajectory.md and trajectory.png (and curves.png, where runs kept a history) under
    `out` for the runs under `dirs`; with a `bench` CSV, add each row's job efficiency; with `to_wandb`, also log
    the table and chart (see `log_to_wandb`) under the runs' group.

    Runs of several settings (`setting_of`: budget, data, size, epochs, width, batch, precision) are never
    compared: each setting gets its own report in `out/<setting>/`, and `out` the cross-budget table
    (`roadmap.budgets`: budgets.{csv,md,png}), whose keys the returned paths then name; `setting` keeps one.
    `budgets_only` writes the cross-budget table alone, for studies whose own reports lie beside their runs."""
    runs = load_runs(dirs)
    if runs.empty:
        raise FileNotFoundError(f"no runs under {', '.join(map(str, dirs))}")
    settings = list(dict.fromkeys(runs["setting"]))
    if setting is not None:
        if setting not in settings:
            raise ValueError(f"--setting {setting!r} matches no run under {', '.join(map(str, dirs))}; its "
                             f"settings: {'; '.join(map(repr, settings))}")
        runs, settings = runs[runs["setting"] == setting], [setting]
    out = Path(out)
    if budgets_only:
        return _write_budgets(runs, out, dirs, metric, title)
    if len(settings) == 1:
        return _write_study(runs, out, dirs, metric, title, to_wandb, bench)
    paths = {}
    for s in settings:
        study = _write_study(runs[runs["setting"] == s], out / _slug(s), dirs, metric,
                             f"{title or DEFAULT_TITLE} — {s}", to_wandb, bench)
        paths |= {f"{s}:{kind}": path for kind, path in study.items()}
    return {**_write_budgets(runs, out, dirs, metric, title), **paths}


def _write_study(runs: pd.DataFrame, out: Path, dirs: Sequence[str | Path], metric: str, title: str | None,
                 to_wandb: bool, bench: str | Path | None) -> dict[str, Path]:
    """One setting's report (see `write_report`)."""
    table = trajectory_table(runs, metric)
    if bench is not None:
        table = add_efficiency(table, bench)
    history = load_histories(runs.assign(row=_row_keys(runs)))
    if not history.empty:
        table = add_rise(table, history)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "trajectory.csv", "md": out / "trajectory.md", "png": out / "trajectory.png"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(_markdown(table, runs, dirs, metric, title or DEFAULT_TITLE))
    plot_trajectory(table, runs, paths["png"], title, metric)
    if not history.empty:
        paths["curves"] = out / "curves.png"
        curves_figure(table, history, dict(zip(table["row"], row_labels(table))),
                      title or DEFAULT_TITLE).savefig(paths["curves"], dpi=150)
    if to_wandb:
        groups = runs["group"].dropna().unique()
        log_to_wandb(table, paths["png"], groups[0] if len(groups) == 1 else "report")
    return paths


def _write_budgets(runs: pd.DataFrame, out: Path, dirs: Sequence[str | Path], metric: str,
                   title: str | None) -> dict[str, Path]:
    """The cross-budget table (`roadmap.budgets`) of runs of several settings."""
    table = budget_table(runs, metric)
    title = title or "Roadmap transitions by budget: measured Δ beside the paper's"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "budgets.csv", "md": out / "budgets.md"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(budget_markdown(table, title, dirs, metric))
    if not table.empty:   # no setting measured both rows of any transition: nothing to draw
        paths["png"] = out / "budgets.png"
        budget_figure(table, title).savefig(paths["png"], dpi=150)
    return paths


def _slug(setting: str) -> str:
    """A setting as a folder name: 'cpu_replay: imagenette 64px' -> 'cpu_replay-imagenette-64px'."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", setting).strip("-")


def _markdown(table: pd.DataFrame, runs: pd.DataFrame, dirs: Sequence[str | Path], metric: str, title: str) -> str:
    columns = {**MARKDOWN, **{c: d for c, d in {**EFFICIENCY, **CURVES}.items() if c in table}}
    shown = table[list(columns)].round({c: d for c, d in columns.items() if d is not None})
    shown = shown.astype(object).where(shown.notna(), None)  # blank cells, not 'nan'
    bad = runs[runs["status"] != "finished"]
    failures = [f"- `{r.run_dir}` — {r.status}: {r.error if pd.notna(r.error) else 'no error recorded'}"
                for r in bad.itertuples()]
    return "\n".join([
        f"# {title}", "",
        f"Read from: {', '.join(f'`{d}`' for d in dirs)}. Metric: `{metric}` (%), mean over finished seeds.", "",
        "`ci95_*`: half-width of the 95 % t-interval; `delta_prev`: change over the previous measured roadmap "
        "row, its interval paired by seed; `paper_delta`: the paper's change between the same rows; `gmacs` at "
        "the run's image size, `gmacs_224` at 224 px." + (
            " `job_efficiency`: train img/s of the whole job over the model's alone (`roadmap.bench`)."
            if "job_efficiency" in table else "") + (
            " `rise_last2`: the top-1 gain over the last two epochs, mean over seeds (`still_rising`: it is > 0; "
            "curves.png draws each row's learning curves)." if "rise_last2" in table else ""), "",
        shown.to_markdown(index=False, missingval=""), "",
        *([f"Study job efficiency {study_efficiency(table):.2f} (the models alone would take that share of the "
           f"rows' training time); rows {table['job_efficiency'].min():.2f}-{table['job_efficiency'].max():.2f}, "
           f"mean {table['job_efficiency'].mean():.2f}.", ""] if "job_efficiency" in table else []),
        "## Failed or unfinished runs", "",
        *(failures or ["None."]), "",
    ])


def log_to_wandb(table: pd.DataFrame, png: str | Path, group: str, project: str = "roadmap") -> None:
    """Log the table and chart as one 'report' run beside the group's training runs (offline unless asked)."""
    wandb.init(project=project, group=group, job_type="report", name=f"report-{group}", dir=Path(png).parent,
               mode="online" if os.environ.get("WANDB_MODE") == "online" else "offline")
    try:
        wandb.log({"trajectory": wandb.Table(dataframe=table), "trajectory_chart": wandb.Image(str(png))})
    finally:
        wandb.finish()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m roadmap.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories, searched recursively for runs")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for trajectory.{csv,md,png} (and curves.png); runs of several settings get "
                             "one such folder each under it, beside the cross-budget budgets.{csv,md,png}")
    parser.add_argument("--setting", help="report only the runs of this setting (the names an earlier report "
                                          "listed, e.g. 'cpu_replay: imagenette 64px 6ep w0.25 b64 bf16-mixed')")
    parser.add_argument("--budgets-only", action="store_true",
                        help="write only the cross-budget budgets.{csv,md,png} under --out, not each setting's report")
    parser.add_argument("--metric", choices=("acc1", "acc1_best", "acc1_ema"), default="acc1")
    parser.add_argument("--title")
    parser.add_argument("--bench", type=Path, metavar="CSV",
                        help="a `python -m roadmap.bench --csv` of the same models, size, batch and precision: "
                             "adds each row's job efficiency")
    parser.add_argument("--export-runs", type=Path, metavar="DIR",
                        help="first copy each run's summary.json and .hydra/ config here (e.g. results/<study>/runs), "
                             "and report from that copy")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=False,
                        help="log the table and chart to W&B (offline unless WANDB_MODE=online)")
    args = parser.parse_args(argv)
    dirs = args.dirs
    if args.export_runs:
        print(f"copied {export_runs(dirs, args.export_runs)} run records to {args.export_runs}")
        dirs = [args.export_runs]
    paths = write_report(dirs, args.out, args.metric, args.title, to_wandb=args.wandb, bench=args.bench,
                         setting=args.setting, budgets_only=args.budgets_only)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
