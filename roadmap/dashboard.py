"""A study's W&B workspace and report, built as code: `python -m roadmap.dashboard --entity E --group trajectory`.

The dashboard is first a specification (plain data: sections, panels and the run keys each reads), written as
JSON by `--dry-run`, which needs no network, entity or `wandb-workspaces`; `wandb-workspaces` then turns it into a
saved workspace and report, which needs a logged-in, online machine. Every key a panel reads is one that train.py logs: the flat run config
(`roadmap.step`, `model.*`, `recipe.name`, `data.name`, `params`, `gmacs`), the run summary (the final numbers of
`summary.json`) and the history (`val/acc1`, `train/loss_epoch`, per `epoch`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roadmap import paper
from roadmap.runs import ORDER

NAME = "name"             # a run's label: its step, or its model config's name (deit_small, swin_tiny)
FINAL = ["acc1", "paper_top1"]   # summary keys of the final-accuracy chart
CURVES = [("val/acc1", "val top-1 (%) per epoch"), ("train/loss_epoch", "train loss per epoch")]
# every model key a roadmap step sets is a column (tests/test_dashboard.py checks it against conf/roadmap/)
FLAGS = ["model.depths", "model.stem", "model.stem_width", "model.widths", "model.depthwise", "model.block",
         "model.dw_position", "model.kernel_size", "model.act", "model.activations", "model.norm", "model.norms",
         "model.downsample", "model.grn", "model.layer_scale_init", "recipe.name", "recipe.optimizer",
         "recipe.drop_path_rate"]


def specification(entity: str, project: str, group: str, table_md: str | None = None) -> dict[str, Any]:
    """The workspace and report for one study (W&B group), as data."""
    runs = {"filters": {"group": group}, "groupby": NAME, "order_by": ORDER, "order": paper.run_order()}
    sections = [
        {"name": "Trajectory", "panels": [
            {"type": "bar", "title": "final top-1 (%) per row, paper's ImageNet top-1 beside it",
             "summary": FINAL, "groupby": NAME, "aggregate": "mean", "range": "stderr"},
            {"type": "scalar", "title": "mean final top-1 (%)", "summary": ["acc1"]}]},
        {"name": "Curves", "panels": [{"type": "line", "title": title, "x": "epoch", "history": [key],
                                       "groupby": NAME, "aggregate": "mean", "range": "stderr"}
                                      for key, title in CURVES]},
        {"name": "Which flag moved top-1", "panels": [
            {"type": "parallel", "title": "builder and recipe flags against final top-1",
             "config": FLAGS, "summary": ["acc1"], "runs": {"model._target_": "roadmap.models.RoadmapNet"}}]},
        {"name": "Runs", "panels": [{"type": "comparer", "title": "configs side by side"}]},
    ]
    report = {"title": f"ResNet-50 -> ConvNeXt-T roadmap: {group}",
              "description": "The roadmap's trajectory on this study's budget, beside the paper's numbers.",
              "text": "Each row is a roadmap step (Liu et al., CVPR 2022, Table 10) or a ViT baseline, averaged over "
                      "seeds. The bar chart sets this study's final top-1 beside the paper's ImageNet-1K top-1; "
                      "the parallel coordinates show which builder flag each step flips.",
              "table": table_md,
              "sections": ["Trajectory", "Curves", "Which flag moved top-1"]}
    return {"entity": entity, "project": project, "group": group, "runs": runs,
            "workspace": {"name": f"roadmap: {group}", "sections": sections}, "report": report}


def keys(spec: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, set[str]]:
    """Every run key the specification reads, by where W&B keeps it: config, summary, history. Given a run's
    config, only the panels that apply to it: the builder's flags are RoadmapNet's, which the ViTs lack."""
    used: dict[str, set[str]] = {"config": {NAME, *spec["runs"]["filters"]}, "summary": {ORDER}, "history": set()}
    for section in spec["workspace"]["sections"]:
        for panel in section["panels"]:
            if config is not None and any(config.get(k) != v for k, v in panel.get("runs", {}).items()):
                continue
            for where in used:
                used[where].update(panel.get(where, []))
            if "groupby" in panel:
                used["config"].add(panel["groupby"])
            if "x" in panel:
                used["history"].add(panel["x"])
    return used


def offline_run(run: Path) -> dict[str, Any]:
    """An offline W&B run's config and summary, read by W&B's own `wandb leet inspect` (no network)."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def missing(spec: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The keys the specification reads that an offline run lacks (history keys: their last values are in the
    summary). Empty when every panel of the dashboard would find its data in this run."""
    used = keys(spec, run["config"])
    return sorted({f"config:{k}" for k in used["config"] - set(run["config"])}
                  | {f"summary:{k}" for k in (used["summary"] | used["history"]) - set(run["summary"])})


def build(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The specification as wandb-workspaces objects (validated offline; `.save()` needs W&B online)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def panel(p: dict[str, Any]) -> Any:
        if p["type"] == "bar":
            return wr.BarPlot(title=p["title"], metrics=[wr.SummaryMetric(k) for k in p["summary"]],
                              groupby=wr.Config(p["groupby"]), groupby_aggfunc=p["aggregate"],
                              groupby_rangefunc=p["range"], orientation="v")
        if p["type"] == "scalar":
            return wr.ScalarChart(title=p["title"], metric=wr.SummaryMetric(p["summary"][0]), groupby_aggfunc="mean")
        if p["type"] == "line":
            return wr.LinePlot(title=p["title"], x=p["x"], y=p["history"], groupby=wr.Config(p["groupby"]),
                               groupby_aggfunc=p["aggregate"], groupby_rangefunc=p["range"])
        if p["type"] == "parallel":
            return wr.ParallelCoordinatesPlot(title=p["title"], columns=[
                *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in p["config"]),
                *(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k)) for k in p["summary"])])
        return wr.RunComparer(diff_only="split")

    runs = spec["runs"]
    filters = [expr.Config(k) == v for k, v in runs["filters"].items()]
    sections = {s["name"]: [panel(p) for p in s["panels"]] for s in spec["workspace"]["sections"]}
    workspace = ws.Workspace(
        entity=spec["entity"], project=spec["project"], name=spec["workspace"]["name"],
        sections=[ws.Section(name=name, panels=panels, is_open=True) for name, panels in sections.items()],
        runset_settings=ws.RunsetSettings(filters=filters, groupby=[expr.Config(runs["groupby"])],
                                          order=[expr.Ordering(expr.Summary(runs["order_by"]))]))
    r = spec["report"]
    runset = wr.Runset(entity=spec["entity"], project=spec["project"], name=spec["group"], filters=filters,
                       groupby=[f"config.{runs['groupby']}"])
    report = wr.Report(entity=spec["entity"], project=spec["project"], title=r["title"], description=r["description"],
                       blocks=[wr.P(r["text"]), *([wr.MarkdownBlock(r["table"])] if r["table"] else []),
                               *(wr.PanelGrid(runsets=[runset], panels=sections[name]) for name in r["sections"])])
    return workspace, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", help="W&B entity (user or team) that owns the project; needed to save")
    parser.add_argument("--project", default="roadmap")
    parser.add_argument("--group", required=True, help="the study's W&B group (its `group=`, e.g. trajectory)")
    parser.add_argument("--table", help="a report's trajectory.md to embed (python -m roadmap.report writes it)")
    parser.add_argument("--dry-run", action="store_true", help="write the specification as JSON; save nothing")
    parser.add_argument("--out", default="dashboard.json", help="where --dry-run writes the specification")
    parser.add_argument("--check", help="a study's output folder: check that its offline W&B runs have every key "
                                        "the panels read")
    args = parser.parse_args(argv)
    if not (args.entity or args.dry_run):
        parser.error("--entity is needed to save the workspace and report (--dry-run writes the specification only)")
    table = Path(args.table).read_text() if args.table else None
    spec = specification(args.entity, args.project, args.group, table)
    sections = ", ".join(s["name"] for s in spec["workspace"]["sections"])
    what = (f"workspace '{spec['workspace']['name']}' ({sections}) and report '{spec['report']['title']}' in "
            f"{args.entity or '<entity>'}/{args.project}, runs of group {args.group}")
    if args.check:
        runs = sorted(Path(args.check).glob("**/wandb/offline-run-*"))
        if not runs:
            raise SystemExit(f"--check {args.check}: no offline W&B runs under it (were they run with logger=wandb?)")
        for run in runs:
            if lacking := missing(spec, offline_run(run)):
                raise SystemExit(f"{run} lacks {', '.join(lacking)}: the dashboard's panels would be empty there")
        print(f"{len(runs)} offline runs under {args.check} have every key the dashboard reads")
    if args.dry_run:
        Path(args.out).write_text(json.dumps(spec, indent=2))
        print(f"would create the {what}; specification in {args.out}")
        return
    try:
        workspace, report = build(spec)
    except ImportError:
        raise SystemExit("saving needs wandb-workspaces, W&B's workspace and report API: uv sync --extra dashboard "
                         "(or --dry-run, which writes the specification only)") from None
    workspace.save()
    report.save()
    print(f"created the {what}: {workspace.url} and {report.url}")


if __name__ == "__main__":
    main()
