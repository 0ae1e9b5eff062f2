"""Committed results are data: each study's table regenerates from its committed run records (results/*/runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from roadmap.config import compose
from roadmap.report import export_runs, write_report
from roadmap.runs import OVERRIDES, RECORD, SUMMARY, config_diff, fingerprint, flat_config

from conftest import REPO

STUDIES = sorted(p.parent for p in (REPO / "results").glob("*/runs"))
# One seed of each committed row whose summary records its config (older summaries do not)
RECORDED = sorted(p.parent for p in (REPO / "results").glob(f"*/runs/**/seed0/{SUMMARY}")
                  if "config" in json.loads(p.read_text()))


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


@pytest.mark.parametrize("run", RECORDED, ids=[str(r.relative_to(REPO / "results"))[:80] for r in RECORDED])
def test_committed_runs_compose_to_the_config_they_recorded(run: Path):
    """Its command's overrides still compose to the flat config (so the fingerprint) it trained with: a change to
    conf/ that moved a value or a key would make the run look new, and a rerun would train it again."""
    summary = json.loads((run / SUMMARY).read_text())
    flat = flat_config(compose(list(OmegaConf.load(run / OVERRIDES))))
    assert fingerprint(flat) == summary["fingerprint"], config_diff(summary["config"], flat)
