"""Committed results are data: each study's table regenerates from its committed run records (results/*/runs)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from roadmap.report import export_runs, write_report
from roadmap.runs import RECORD

from helpers.configs import REPO

STUDIES = sorted(p.parent for p in (REPO / "results").glob("*/runs"))


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_committed_table_regenerates_from_committed_runs(study: Path, tmp_path: Path, monkeypatch):
    """Byte for byte, the Markdown too (under the title its first line gives, read from the path it names)."""
    bench = study / "bench.csv"
    title = (study / "trajectory.md").read_text().splitlines()[0].removeprefix("# ")
    monkeypatch.chdir(REPO)
    paths = write_report([(study / "runs").relative_to(REPO)], tmp_path, title=title,
                         bench=bench if bench.is_file() else None)
    for kind in ("csv", "md"):
        assert paths[kind].read_bytes() == (study / f"trajectory.{kind}").read_bytes(), kind


@pytest.mark.slow
def test_committed_cross_budget_table_regenerates_from_the_runs_it_names(tmp_path: Path, monkeypatch):
    """results/budgets/: byte for byte from the committed run folders its Markdown says it was read from."""
    committed = REPO / "results" / "budgets"
    lines = (committed / "budgets.md").read_text().splitlines()
    dirs = re.findall(r"`([^`]+)`", lines[2].partition(". Metric")[0])
    assert len(dirs) >= 2 and all((REPO / d).is_dir() for d in dirs), lines[2]
    monkeypatch.chdir(REPO)
    paths = write_report(dirs, tmp_path, title=lines[0].removeprefix("# "), budgets_only=True)
    assert set(paths) == {"csv", "md", "png"}   # the studies' own tables are not written twice
    for kind in ("csv", "md"):
        assert paths[kind].read_bytes() == (committed / f"budgets.{kind}").read_bytes(), kind


def test_export_keeps_the_record_and_nothing_else(tmp_path: Path):
    run = tmp_path / "sweep" / "imagenette" / "step00_baseline" / "seed0"
    for name in (*RECORD, "checkpoints/last.ckpt", "wandb/run.wandb", "run.log"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    (run / "superseded" / "20240101").mkdir(parents=True)
    (run / "superseded" / "20240101" / "summary.json").write_text("{}")
    assert export_runs([tmp_path / "sweep"], tmp_path / "runs") == 1
    kept = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*") if p.is_file())
    assert kept == [f"imagenette/step00_baseline/seed0/{name}" for name in sorted(RECORD)]
