"""The W&B dashboard as code (`roadmap.dashboard`): its specification reads only keys that finished runs logged,
in the paper's order, with the baselines; and the final metrics are in each offline run's W&B summary."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from roadmap import paper
from roadmap.dashboard import build, main, missing, offline_run, specification
from roadmap.runs import ORDER

from helpers.commands import run_py

SMALL = "model.width_mult=0.25"
pytestmark = pytest.mark.xdist_group("dashboard")   # one pytest-xdist worker runs the module's sweep, once


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished two-job sweep, a step and a baseline, logged to offline W&B."""
    log_dir = tmp_path_factory.mktemp("dash")
    proc = run_py("-m", "+roadmap=step00_baseline,baselines/deit_small", SMALL, "group=dash", "logger=wandb",
                  log_dir=log_dir, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return log_dir


@pytest.fixture(scope="module")
def offline_runs(sweep) -> dict[str, dict]:
    """Each run's W&B record (config, summary), read from its offline files as `wandb leet inspect` reads them."""
    runs = {}
    for run in sweep.glob("dash/**/wandb/offline-run-*"):
        record = offline_run(run)
        runs[record["config"]["name"]] = record
    assert sorted(runs) == ["deit_small", "step00_baseline"]
    return runs


@pytest.mark.slow
def test_final_metrics_are_in_the_offline_run_summary(offline_runs, sweep):
    run = offline_runs["step00_baseline"]
    (summary_json,) = sweep.glob("dash/**/step00_baseline*/seed0/summary.json")
    final = json.loads(summary_json.read_text())
    for key in ("acc1", "acc1_best", "acc5", "train_img_per_s", "params", "gmacs"):
        assert run["summary"][key] == pytest.approx(final[key]), key   # the final numbers, not only history
    assert run["summary"]["paper_top1"] == 76.13 and run["config"]["roadmap.step"] == "step00_baseline"   # flat
    assert offline_runs["deit_small"]["summary"]["paper_top1"] == 79.8   # a baseline's, from the paper's Table 1


@pytest.mark.slow
def test_dry_run_specification_reads_only_logged_keys_in_the_papers_order(offline_runs, sweep, tmp_path, capsys):
    main(["--entity", "me", "--group", "dash", "--dry-run", "--out", str(tmp_path / "spec.json"),
          "--check", str(sweep)])
    out = capsys.readouterr().out
    assert "2 offline runs under" in out and "would create the workspace 'roadmap: dash'" in out
    spec = json.loads((tmp_path / "spec.json").read_text())
    for run in offline_runs.values():
        assert missing(spec, run) == [] and spec["runs"]["filters"] == {"group": run["config"]["group"]}
    assert missing(spec, {"config": {}, "summary": {}})   # a run without the keys is caught
    order = spec["runs"]["order"]
    assert order[:len(paper.table10())] == list(paper.table10()["step"])   # Table 10, then Table 1's baselines
    assert sorted(order[len(paper.table10()):]) == ["deit_small", "swin_tiny"]
    summaries = {name: run["summary"] for name, run in offline_runs.items()}
    assert summaries["step00_baseline"][ORDER] < summaries["deit_small"][ORDER]   # the runs sort in that order
    bar = spec["workspace"]["sections"][0]["panels"][0]
    assert bar["summary"] == ["acc1", "paper_top1"] and bar["groupby"] == "name"   # ours beside the paper's


def test_specification_builds_a_workspace_and_report_offline(tmp_path):
    table = tmp_path / "trajectory.md"
    table.write_text("| row | top-1 |\n|---|---|\n| step00_baseline | 36.4 |\n")
    workspace, report = build(specification("me", "roadmap", "dash", table.read_text()))
    assert [s.name for s in workspace.sections] == ["Trajectory", "Curves", "Which flag moved top-1", "Runs"]
    assert report.title.endswith("dash") and len(report.blocks) == 5   # text, table, three panel grids


def test_dry_run_needs_no_entity_nor_wandb_workspaces(tmp_path, monkeypatch, capsys):
    for name in ("wandb_workspaces", "wandb_workspaces.reports.v2", "wandb_workspaces.workspaces"):
        monkeypatch.setitem(sys.modules, name, None)   # as if not installed: importing it raises ImportError
    main(["--group", "dash", "--dry-run", "--out", str(tmp_path / "spec.json")])
    assert "would create the workspace 'roadmap: dash'" in capsys.readouterr().out
    assert json.loads((tmp_path / "spec.json").read_text())["group"] == "dash"
    with pytest.raises(SystemExit, match="uv sync --extra dashboard"):   # saving does need it, and says so
        main(["--entity", "me", "--group", "dash"])
    with pytest.raises(SystemExit):   # and an entity: argparse's one-line usage error
        main(["--group", "dash"])
    assert "--entity is needed to save" in capsys.readouterr().err


def test_the_module_is_one_pytest_xdist_group(request):
    """Under `--dist loadgroup` a marked test's node id carries its group: that suffix is how pytest-xdist sends
    the module (and the SLURM tests) to one worker. On pytest 9.2 it no longer took (pytest-dev/pytest-xdist#1386)
    and the sweep above ran on both workers."""
    if "PYTEST_XDIST_WORKER" not in os.environ or not request.config.getvalue("loadgroup"):
        pytest.skip("not a pytest-xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@dashboard"), request.node.nodeid


def test_every_model_key_a_step_sets_is_a_column():
    from omegaconf import OmegaConf
    from roadmap.config import CONF_DIR
    from roadmap.dashboard import FLAGS
    set_by_steps = {f"model.{key}" for p in (CONF_DIR / "roadmap").glob("*.yaml")
                    for key in OmegaConf.load(p).get("model", {})}
    assert set_by_steps and set_by_steps <= set(FLAGS), set_by_steps - set(FLAGS)
