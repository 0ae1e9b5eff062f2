"""roadmap.report on hand-made run directories: statistics against hand-computed numbers, nothing dropped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from roadmap import paper
from roadmap.budgets import agreement, budget_table
from roadmap.report import COLUMNS, load_runs, log_to_wandb, study_efficiency, trajectory_table, write_report
from roadmap.runs import write_history

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["row", "step", "variant", "n", "mean_top1", "std_top1", "ci95_top1", "delta_prev", "delta_prev_ci95",
            "paper_top1", "paper_delta", "sign_agrees", "params_m", "gmacs", "gmacs_224", "train_img_per_s",
            "wall_s", "status"]
T975_2 = 4.302652729749462   # scipy.stats.t.ppf(0.975, 2)
T975_1 = 12.706204736174694  # scipy.stats.t.ppf(0.975, 1)


def run_dir(sweep: Path, name: str, seed: int, variant: str = "") -> Path:
    path = sweep / "imagewoof" / (f"{name},{variant}" if variant else name) / f"seed{seed}"
    (path / ".hydra").mkdir(parents=True)
    return path


def write_run(sweep: Path, name: str, seed: int, acc1: float | None, *, step: str | None = "same",
              variant: str = "", status: str = "finished", error: str | None = None,
              model: str = "RoadmapNet", data: str = "imagewoof", epochs: int = 20,
              history: list[float] | None = None) -> None:
    """A summary.json as train() writes it; `step` defaults to the name (a roadmap step)."""
    summary = {
        "status": status, "error": error, "name": name, "step": name if step == "same" else step,
        "step_name": None, "variant": variant, "paper_top1": None, "paper_gmacs": None, "group": sweep.name,
        "model": model, "params": 25_000_000, "gmacs": 0.3, "gmacs_224": 4.0, "data": data,
        "image_size": 64, "epochs": epochs, "seed": seed, "recipe": "modern", "acc1": acc1, "acc5": None,
        "acc1_best": acc1, "acc5_best": None, "val_loss": None, "train_img_per_s": 500.0 + seed, "wall_s": 100.0,
        "git_commit": "abc", "run_dir": "/elsewhere", "finished_at": "2024-01-01T00:00:00+00:00",
    }
    path = run_dir(sweep, name, seed, variant)
    (path / "summary.json").write_text(json.dumps(summary))
    if history is not None:   # val top-1 by epoch
        write_history(path, [{"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "val_loss": 2.0, "acc1": a,
                              "acc5": None, "acc1_ema": None} for e, a in enumerate(history, 1)])


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("outputs")
    trajectory, kernels = root / "trajectory", root / "kernel_sweep"
    for seed, acc in enumerate([70.0, 72.0, 74.0]):
        write_run(trajectory, "step00_baseline", seed, acc)
    for seed, acc in enumerate([75.0, 78.0, 78.0]):
        write_run(trajectory, "step01_modern_training", seed, acc)
    write_run(trajectory, "step02a_stage_ratio", 0, 74.0)
    write_run(trajectory, "step02a_stage_ratio", 1, 76.0)
    write_run(trajectory, "step02a_stage_ratio", 2, None, status="failed", error="OutOfMemoryError: CUDA oom")
    run_dir(trajectory, "step02_macro_design", 0)  # started, never wrote a summary
    write_run(trajectory, "deit_small", 0, 60.0, step=None, model="deit_small_patch16_224")
    write_run(kernels, "step05_kernel7", 0, 71.0, variant="model.kernel_size=9")
    write_run(kernels, "step05_kernel7", 1, 73.0, variant="model.kernel_size=9")
    write_run(kernels, "step05_kernel7", 0, 69.0, variant="model.drop_path_rate=0.2")
    return [trajectory, kernels]


@pytest.fixture(scope="module")
def report(sweeps, tmp_path_factory) -> dict[str, Path]:
    return write_report(sweeps, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def table(report) -> pd.DataFrame:
    return pd.read_csv(report["csv"]).set_index("row")


def test_csv_has_the_required_columns(table):
    assert set(REQUIRED) <= {"row", *table.columns}
    assert ["row", *table.columns] == COLUMNS


def test_rows_follow_the_paper_then_variants_then_baselines(table):
    assert list(table.index) == ["step00_baseline", "step01_modern_training", "step02a_stage_ratio",
                                 "step02_macro_design", "step05_kernel7,model.kernel_size=9",
                                 "step05_kernel7,model.drop_path_rate=0.2", "deit_small"]
    assert list(table["kind"]) == ["roadmap"] * 5 + ["variant", "baseline"]


def test_seed_statistics(table):
    r = table.loc["step00_baseline"]  # seeds 70, 72, 74
    assert r["n"] == 3
    assert r["mean_top1"] == pytest.approx(72.0)
    assert r["std_top1"] == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2)
    assert r["ci95_top1"] == pytest.approx(4.9682754235)  # T975_2 * 2 / sqrt(3)
    assert r["ci95_top1"] == pytest.approx(T975_2 * 2 / np.sqrt(3))
    one = table.loc["step05_kernel7,model.drop_path_rate=0.2"]  # a single seed: no spread, no interval
    assert one["n"] == 1 and one["mean_top1"] == 69.0
    assert np.isnan(one["std_top1"]) and np.isnan(one["ci95_top1"])
    assert r["params_m"] == pytest.approx(25.0) and r["gmacs_224"] == pytest.approx(4.0)
    assert r["train_img_per_s"] == pytest.approx(501.0)  # 500, 501, 502
    assert r["status"] == "3 finished"


def test_delta_interval_pairs_seeds(table):
    modern = table.loc["step01_modern_training"]  # 75, 78, 78 minus 70, 72, 74 per seed: 5, 6, 4
    assert modern["prev_row"] == "step00_baseline"
    assert modern["delta_prev"] == pytest.approx(5.0)
    assert modern["delta_prev_ci95"] == pytest.approx(2.4841377118)  # T975_2 * std(5, 6, 4)=1 / sqrt(3)
    ratio = table.loc["step02a_stage_ratio"]  # 74, 76 (seed 2 failed) vs 75, 78, 78
    assert ratio["delta_prev"] == pytest.approx(75.0 - 77.0)  # difference of the means, all seeds
    assert ratio["delta_prev_ci95"] == pytest.approx(6.3531023681)  # seeds 0, 1: -1, -2; T975_1 * 0.7071 / sqrt(2)
    assert ratio["std_top1"] == pytest.approx(np.sqrt(2))
    assert ratio["ci95_top1"] == pytest.approx(T975_1)  # T975_1 * sqrt(2) / sqrt(2)
    assert ratio["status"] == "2 finished, 1 failed"
    first = table.loc["step00_baseline"]
    assert np.isnan(first["delta_prev"]) and np.isnan(first["paper_delta"])


def test_sign_agreement_with_the_paper(table):
    t10 = paper.table10().set_index("step")["top1"]
    modern, ratio = table.loc["step01_modern_training"], table.loc["step02a_stage_ratio"]
    assert modern["paper_delta"] == pytest.approx(t10["step01_modern_training"] - t10["step00_baseline"])
    assert modern["sign_agrees"] is True  # +5 measured, +2.69 in the paper
    assert ratio["sign_agrees"] is False  # -2 measured, +0.54 in the paper
    assert np.isnan(table.loc["step00_baseline", "sign_agrees"])
    assert np.isnan(table.loc["deit_small", "sign_agrees"])


def test_kernel_override_replays_the_papers_kernel9_row(table):
    r = table.loc["step05_kernel7,model.kernel_size=9"]
    t10 = paper.table10().set_index("step")
    assert r["paper_row"] == "step05_kernel9"
    assert r["paper_top1"] == t10.loc["step05_kernel9", "top1"]
    assert r["paper_gmacs"] == t10.loc["step05_kernel9", "gmacs"]
    assert r["prev_row"] == "step02a_stage_ratio"  # step02_macro_design has no finished run
    assert r["delta_prev"] == pytest.approx(72.0 - 75.0)
    assert r["delta_prev_ci95"] == pytest.approx(0.0)  # seeds 0, 1: -3, -3
    other = table.loc["step05_kernel7,model.drop_path_rate=0.2"]
    assert np.isnan(other["paper_top1"]) and np.isnan(other["delta_prev"])


def test_baseline_row(table):
    r = table.loc["deit_small"]
    assert r["kind"] == "baseline" and r["paper_row"] == "DeiT-S"
    assert r["paper_top1"] == pytest.approx(79.8)
    assert r["mean_top1"] == 60.0 and np.isnan(r["delta_prev"])


def test_transfer_rows_compare_with_the_dog_report(tmp_path):
    """On Stanford Dogs a model's reference is the dog-breed report's top-1, not ImageNet's Table 1."""
    transfer = tmp_path / "transfer"
    for name, model in (("mobilenetv2_100", "mobilenetv2_100"), ("convnext_tiny", "RoadmapNet"),
                        ("resnet50", "RoadmapNet")):
        write_run(transfer, name, 0, 50.0, step=None, model=model, data="stanford_dogs")
    paths = write_report([transfer], tmp_path / "report")
    table = pd.read_csv(paths["csv"]).set_index("row")
    assert table.loc["mobilenetv2_100", "paper_top1"] == 80.0 and table.loc["convnext_tiny", "paper_top1"] == 84.4
    assert np.isnan(table.loc["resnet50", "paper_top1"])   # the report has no ResNet-50
    assert paper.baseline(None, "convnext_tiny")["top1"] == 82.1   # elsewhere: ImageNet (Table 1)


def test_runs_own_efficiency_wins_over_the_bench(tmp_path):
    """Rows whose runs timed their model (trainer.efficiency=true) keep that; the others take the bench CSV."""
    sweep = tmp_path / "sweep"
    for seed, eff in enumerate([0.8, 0.9]):
        write_run(sweep, "step00_baseline", seed, 70.0)
        path = sweep / "imagewoof" / "step00_baseline" / f"seed{seed}" / "summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "model_img_per_s": 600.0, "job_efficiency": eff}))
    write_run(sweep, "step01_modern_training", 0, 72.0)
    bench = tmp_path / "bench.csv"
    bench.write_text("model,role,train_img_s\nstep00_baseline,ours,1000\nstep01_modern_training,ours,1000\n")
    table = pd.read_csv(write_report([sweep], tmp_path / "report", bench=bench)["csv"]).set_index("row")
    assert table.loc["step00_baseline", "job_efficiency"] == pytest.approx(0.85)
    assert table.loc["step00_baseline", "model_img_per_s"] == 600.0
    assert table.loc["step01_modern_training", "job_efficiency"] == pytest.approx(500 / 1000)


def test_failed_and_unfinished_runs_are_listed(sweeps, report, table):
    runs = load_runs(sweeps)
    assert len(runs) == 14
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert (failed["name"], failed["seed"], failed["error"]) == ("step02a_stage_ratio", 2, "OutOfMemoryError: CUDA oom")
    unfinished = runs[runs["status"] == "unfinished"].iloc[0]
    assert (unfinished["step"], unfinished["seed"], unfinished["data"]) == ("step02_macro_design", 0, "imagewoof")
    assert Path(unfinished["run_dir"]) == sweeps[0] / "imagewoof" / "step02_macro_design" / "seed0"
    assert Path(failed["run_dir"]) == sweeps[0] / "imagewoof" / "step02a_stage_ratio" / "seed2"  # found, not stored
    assert table.loc["step02_macro_design", "n"] == 0
    assert table.loc["step02_macro_design", "status"] == "1 unfinished"
    md = report["md"].read_text()
    section = md.split("## Failed or unfinished runs")[1]
    assert f"`{failed['run_dir']}` — failed: OutOfMemoryError: CUDA oom" in section
    assert f"`{unfinished['run_dir']}` — unfinished" in section
    assert all(str(d) in md for d in sweeps)
    assert "| step00_baseline" in md and "nan" not in md


def test_superseded_results_are_not_runs(tmp_path):
    write_run(tmp_path / "g", "step00_baseline", 0, 70.0)
    old = tmp_path / "g" / "imagewoof" / "step00_baseline" / "seed0" / "superseded" / "20240101-000000"
    (old / "checkpoints").mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    assert list(load_runs([tmp_path / "g"])["status"]) == ["finished"]


def test_chart_is_a_real_image(report):
    image = imread(report["png"])
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01


@pytest.mark.slow
def test_cli(sweeps, tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "roadmap.report", *map(str, sweeps), "--out", str(out),
                           "--metric", "acc1_best"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "step00_baseline" in done.stdout
    assert {p.name for p in out.iterdir()} == {"trajectory.csv", "trajectory.md", "trajectory.png"}
    written = ", ".join(str(out / f"trajectory.{x}") for x in ("csv", "md", "png"))
    assert done.stdout.splitlines()[-1] == f"wrote {written}"


@pytest.mark.slow
def test_wandb_offline_run(sweeps, report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "report"
    out.mkdir()
    png = out / "trajectory.png"
    png.write_bytes(report["png"].read_bytes())
    log_to_wandb(trajectory_table(load_runs(sweeps)), png, group="trajectory")
    assert list(out.glob("wandb/offline-run-*"))


def test_kernel_rows_branch_off_the_chain(tmp_path):
    """Kernel 5/9 are compared with step 05a, but GELU (06a) is compared with kernel 7, as in the paper."""
    for name, acc, variant in [("step05a_move_up", 70.0, ""), ("step05_kernel7", 71.0, "model.kernel_size=5"),
                               ("step05_kernel7", 72.0, ""), ("step05_kernel7", 75.0, "model.kernel_size=9"),
                               ("step06a_gelu", 73.0, "")]:
        write_run(tmp_path / "fine", name, 0, acc, variant=variant)
    t = trajectory_table(load_runs([tmp_path / "fine"])).set_index("row")
    assert t.loc["step05_kernel7,model.kernel_size=5", "prev_row"] == "step05a_move_up"
    assert t.loc["step05_kernel7", "prev_row"] == "step05a_move_up"
    assert t.loc["step05_kernel7,model.kernel_size=9", "prev_row"] == "step05_kernel7"
    assert t.loc["step06a_gelu", "prev_row"] == "step05_kernel7"
    assert t.loc["step06a_gelu", "delta_prev"] == pytest.approx(1.0)


def test_budget_overrides_still_replay_the_paper_row(tmp_path):
    """Command-line budget overrides (data, schedule, proxy width) keep the paper comparison; design ones don't."""
    budget = "data.image_size=64,model.width_mult=0.25,trainer.max_epochs=20"
    write_run(tmp_path / "b", "step05_kernel7", 0, 50.0, variant=budget)
    write_run(tmp_path / "b", "step05_kernel7", 0, 51.0, variant=f"{budget},model.kernel_size=9")
    write_run(tmp_path / "b", "step05_kernel7", 0, 52.0, variant=f"model.depths=[3,3,27,3],{budget}")
    t = trajectory_table(load_runs([tmp_path / "b"])).set_index("row")
    assert t.loc[f"step05_kernel7,{budget}", "paper_row"] == "step05_kernel7"
    assert t.loc[f"step05_kernel7,{budget},model.kernel_size=9", "paper_row"] == "step05_kernel9"
    assert t.loc[f"step05_kernel7,model.depths=[3,3,27,3],{budget}", "kind"] == "variant"


def test_design_overrides_drop_the_budget():
    """Chart labels and paper matching see only design overrides; list values keep their commas."""
    from roadmap.runs import design_overrides
    variant = ("data.image_size=32,model.kernel_size=9,model.width_mult=0.25,model.depths=[3,3,9,3],trainer.max_epochs=1,"
               "seed=3,recipe.lr=0.2,+model.new_flag=1")
    assert design_overrides(variant) == ["model.kernel_size=9", "model.depths=[3,3,9,3]", "recipe.lr=0.2",
                                         "+model.new_flag=1"]


def test_chart_shows_seeds_chance_and_the_papers_trajectory(sweeps):
    """Every finished seed is a dot on the measured panel, chance is a line there, and the paper's roadmap points
    are joined in table order on the other; baselines are rows of both panels."""
    from roadmap.report import trajectory_figure
    runs = load_runs(sweeps).assign(num_classes=10)
    table = trajectory_table(runs)
    paper_panel, ours = trajectory_figure(table, runs).axes
    dots = np.concatenate([c.get_offsets() for c in ours.collections if c.get_gid() == "seeds"])
    finished = runs[(runs["status"] == "finished") & runs["acc1"].notna()]
    assert sorted(dots[:, 0]) == sorted(finished["acc1"])
    assert any(list(line.get_xdata()) == [10.0, 10.0] for line in ours.lines)   # chance: 100 / 10 classes
    roadmap_rows = table[table["kind"] == "roadmap"]
    joined = [line for line in paper_panel.lines if line.get_linestyle() == "-"]
    assert joined and list(joined[0].get_xdata()) == list(roadmap_rows["paper_top1"])
    assert "DeiT-S" in [t.get_text() for t in paper_panel.get_yticklabels()]
    assert ours.get_legend() is None and "small dots: one seed each; dotted line: chance (10 %)" in ours.get_xlabel()


def test_chart_labels_rows_apart_and_pads_a_narrow_paper_axis(tmp_path):
    """Kernel 7 run again as an override is a second 'kernel size 7' row; kernel 7 and 9 lie 0.0 points apart in
    the paper, kernel 5 0.22 below: the paper axis still spans at least 3 points."""
    from roadmap.report import trajectory_figure
    for variant, acc in (("", 50.0), ("model.kernel_size=7", 51.0), ("model.kernel_size=9", 52.0),
                         ("model.kernel_size=5", 49.0)):
        write_run(tmp_path / "k", "step05_kernel7", 0, acc, variant=variant)
    runs = load_runs([tmp_path / "k"])
    paper_panel, _ = trajectory_figure(trajectory_table(runs), runs).axes
    labels = [t.get_text() for t in paper_panel.get_yticklabels()]
    assert len(set(labels)) == 4 and "kernel size 7\n(model.kernel_size=7)" in labels
    lo, hi = paper_panel.get_xlim()
    assert hi - lo >= 3.0


def test_job_efficiency_joins_the_bench_by_row(tmp_path: Path):
    write_run(tmp_path / "s", "step00_baseline", 0, 50.0)                        # 500 img/s in the job
    write_run(tmp_path / "s", "deit_small", 0, 40.0, step=None, model="deit_small_patch16_224")
    pd.DataFrame({"model": ["step00_baseline", "baselines/deit_small", "torchvision resnet50", "step00_baseline",
                            "step00_baseline"],   # three invocations of step 00's bench: their median counts
                  "role": ["ours", "ours", "reference", "ours", "ours"],
                  "train_img_s": [625.0, 1000.0, 1.0, 900.0, 500.0]}
                 ).to_csv(tmp_path / "bench.csv", index=False)
    paths = write_report([tmp_path / "s"], tmp_path / "r", bench=tmp_path / "bench.csv")
    table = pd.read_csv(paths["csv"])
    assert table.set_index("row")["job_efficiency"].to_dict() == pytest.approx({"step00_baseline": 0.8,
                                                                                "deit_small": 0.5})
    assert "Study job efficiency 0.65 " in paths["md"].read_text() and "rows 0.50-0.80, mean 0.65." in paths[
        "md"].read_text()   # jobs at one speed: the study's share of time is the rows' mean


def test_study_efficiency_weighs_rows_by_their_time():
    """A slow row takes more of the study's time, so it counts more than in the mean of the rows' ratios."""
    table = pd.DataFrame({"train_img_per_s": [500.0, 100.0, 300.0], "model_img_per_s": [625.0, 200.0, None]})
    assert study_efficiency(table) == pytest.approx((1 / 625 + 1 / 200) / (1 / 500 + 1 / 100))   # 0.55, not 0.65


# -- settings: a report never compares runs of two budgets or datasets -------------------------------------------
def test_a_mixed_directory_gets_one_table_per_setting_and_no_cross_setting_delta(tmp_path):
    """An ad-hoc folder with a synthetic and an Imagewoof run of one step, and two steps at two epoch budgets."""
    adhoc = tmp_path / "adhoc"
    write_run(adhoc, "step05_kernel7", 0, 20.0, data="synthetic")
    write_run(adhoc, "step05_kernel7", 1, 40.0, data="imagewoof")
    paths = write_report([adhoc], tmp_path / "report")
    tables = {k.split(":")[0]: pd.read_csv(p) for k, p in paths.items() if k.endswith(":csv")}
    assert set(tables) == {"synthetic 64px 20ep", "imagewoof 64px 20ep"}
    for t in tables.values():   # each setting alone: one run, no change computed against the other
        assert t["n"].tolist() == [1] and t["delta_prev"].isna().all()
    assert (tmp_path / "report" / "imagewoof-64px-20ep" / "trajectory.png").is_file()
    only = write_report([adhoc], tmp_path / "one", setting="synthetic 64px 20ep")
    assert pd.read_csv(only["csv"])["mean_top1"].tolist() == [20.0]
    with pytest.raises(ValueError, match="'synthetic 64px 20ep'; 'imagewoof 64px 20ep'"):
        write_report([adhoc], tmp_path / "none", setting="cifar10")


def test_cross_budget_table_pairs_seeds_within_each_budget(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    for seed, (a, b, c) in enumerate([(70.0, 75.0, 71.0), (72.0, 78.0, 73.0), (74.0, 78.0, 80.0)]):
        write_run(short, "step00_baseline", seed, a, epochs=6)
        write_run(short, "step01_modern_training", seed, b, epochs=6)
        write_run(long, "step00_baseline", seed, c, epochs=18)
    write_run(long, "step01_modern_training", 0, 70.0, epochs=18)
    write_run(long, "step01_modern_training", 1, 70.0, epochs=18)
    runs = load_runs([short, long])
    table = budget_table(runs).set_index("transition")
    row = table.loc["00→01 modern_training".replace("_", " ")]
    assert row["paper_delta"] == pytest.approx(2.69)
    assert (row["n@imagewoof 64px 6ep"], row["delta@imagewoof 64px 6ep"]) == (3, pytest.approx(5.0))
    assert row["ci95@imagewoof 64px 6ep"] == pytest.approx(T975_2 * 1 / np.sqrt(3))   # 5, 6, 4
    # seeds 0, 1 only (seed 2 has no step 01): 70 - 71, 70 - 73; never against the 6-epoch runs
    assert (row["n@imagewoof 64px 18ep"], row["delta@imagewoof 64px 18ep"]) == (2, pytest.approx(-2.0))
    assert (row["agrees@imagewoof 64px 6ep"], row["agrees@imagewoof 64px 18ep"]) == (True, False)
    assert list(table.index) == ["00→01 modern training"]   # transitions no setting measured are left out
    counts = agreement(budget_table(runs)).set_index("setting")
    assert counts.loc["imagewoof 64px 6ep"].tolist() == [1, 1] and counts.loc["imagewoof 64px 18ep"].tolist() == [1, 0]
    paths = write_report([short, long], tmp_path / "report")
    md = paths["md"].read_text()
    assert "+5.0 [+2.5, +7.5] ✓ (n=3)" in md and "-2.0" in md and "imagewoof 64px 18ep: 0 of 1 measured" in md
    assert imread(paths["png"]).shape[0] > 200


def test_sub_steps_split_their_main_transition(tmp_path):
    for name, acc in [("step01_modern_training", 50.0), ("step02a_stage_ratio", 51.0), ("step02_macro_design", 47.0)]:
        write_run(tmp_path / "fine", name, 0, acc)
    table = budget_table(load_runs([tmp_path / "fine"])).set_index("transition")
    assert table.loc["01→02 macro design", "kind"] == "main"
    assert table["delta@imagewoof 64px 20ep"].to_dict() == {
        "01→02 macro design": pytest.approx(-3.0), "01→02a stage ratio 3:3:9:3": pytest.approx(1.0),
        "02a→02 patchify stem": pytest.approx(-4.0)}   # the stem, not the stage ratio, carries the loss here


# -- learning curves ---------------------------------------------------------------------------------------------
def test_history_gives_learning_curves_and_whether_each_row_still_rose(tmp_path):
    sweep = tmp_path / "s"
    write_run(sweep, "step00_baseline", 0, 30.0, history=[20.0, 25.0, 28.0, 30.0])   # +5 over the last two
    write_run(sweep, "step00_baseline", 1, 32.0, history=[22.0, 27.0, 31.0, 32.0])   # +5
    write_run(sweep, "step01_modern_training", 0, 40.0, history=[38.0, 41.0, 41.0, 40.0])   # -1: flat
    write_run(sweep, "deit_small", 0, 10.0, step=None, model="deit_small_patch16_224")   # no history
    paths = write_report([sweep], tmp_path / "report")
    table = pd.read_csv(paths["csv"]).set_index("row")
    assert table.loc["step00_baseline", "rise_last2"] == pytest.approx(5.0)
    assert table.loc["step00_baseline", "still_rising"] == True   # noqa: E712 (a CSV bool)
    assert table.loc["step01_modern_training", "rise_last2"] == pytest.approx(-1.0)
    assert table.loc["step01_modern_training", "still_rising"] == False   # noqa: E712
    assert np.isnan(table.loc["deit_small", "rise_last2"])
    assert imread(paths["curves"]).shape[0] > 200 and "still_rising" in paths["md"].read_text()


def test_an_unreadable_summary_is_named_and_the_rest_reported(tmp_path, caplog):
    write_run(tmp_path / "g", "step00_baseline", 0, 70.0)
    write_run(tmp_path / "g", "step00_baseline", 1, 72.0)
    torn = tmp_path / "g" / "imagewoof" / "step00_baseline" / "seed1" / "summary.json"
    torn.write_text(torn.read_text()[:40])   # a kill while another tool rewrote it
    runs = load_runs([tmp_path / "g"]).set_index("seed")
    assert list(runs["status"]) == ["finished", "unfinished"] and runs.loc[0, "acc1"] == 70.0
    assert str(torn) in runs.loc[1, "error"] and "JSONDecodeError" in runs.loc[1, "error"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{runs.loc[1, 'error']}: listed as unfinished"]
    table = pd.read_csv(write_report([tmp_path / "g"], tmp_path / "report")["csv"]).set_index("row")
    assert table.loc["step00_baseline", "n"] == 1 and table.loc["step00_baseline", "mean_top1"] == 70.0
