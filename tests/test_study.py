"""`spikedriven study` on the digits demo: plan, interruption, resume, tables, plots."""

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from spikedriven.engine import trainer
from spikedriven.cli import main
from spikedriven.study.plan import split_cpus

from helpers import read_summary, stop_after_steps

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
# lif at one threshold, if_soft at two (a leaky and a non-leaky mode, as the study's grid has them); IF with a hard
# reset trains through a study in test_parallel_runs_with_devices here and in tests/test_submitit.py
STUDY = ["study", "-c", str(ROOT / "conf/digits/demo.yml"), "--modes", "lif,if_soft", "--thresholds", "0.8,1.0",
         "--seeds", "2", "--epochs", "2", "--warmup-epochs", "0", "--embed-dim", "32", "--set", "val_batch_size=360"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "digits"
    args = [*STUDY, "--study-dir", str(folder)]
    # first invocation: interrupted (as by Ctrl-C) in the middle of the fourth run (44 steps an epoch, 2 epochs a run)
    with pytest.MonkeyPatch.context() as patch:
        stop_after_steps(patch, 3 * 88 + 30)
        first = main(args)
    return folder, args, first


@pytest.mark.slow
def test_interrupted_study_resumes_and_tabulates(study, capsys):
    folder, args, first = study
    assert first == 130
    done_before = sorted(p.parent.name for p in folder.glob("runs/*/results.json"))
    assert len(done_before) == 3
    assert main(args) == 0
    runs = sorted(p.name for p in (folder / "runs").iterdir() if p.is_dir())
    assert len(runs) == 6  # lif: 1 threshold; if_soft: 2; two seeds each
    for run in runs:
        rows = read_summary(folder / "runs" / run)
        assert [r["epoch"] for r in rows] == ["0", "1"], run  # no duplicated or missing epochs

    with open(folder / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["mode"], float(r["v_threshold"])) for r in table] == [("lif", 1.0), ("if_soft", 0.8), ("if_soft", 1.0)]
    for row in table:
        assert row["model"] == "sdt" and row["size"] == "sdt, depth 1, width 32"
        names = [f"sdt-{row['mode']}-uth{float(row['v_threshold']):g}-seed{s}" for s in (42, 43)]
        summaries = [read_summary(folder / "runs" / n) for n in names]
        final = [float(s[-1]["eval_top1"]) for s in summaries]
        best = [max(float(r["eval_top1"]) for r in s) for s in summaries]
        assert int(row["seeds"]) == 2
        assert float(row["final_top1_mean"]) == pytest.approx(statistics.fmean(final))
        assert float(row["final_top1_std"]) == pytest.approx(statistics.stdev(final))
        assert float(row["best_top1_mean"]) == pytest.approx(statistics.fmean(best))
        assert float(row["best_top1_std"]) == pytest.approx(statistics.stdev(best))
        assert row["best_picked_on"] == "test"
        metrics = [json.loads((folder / "runs" / n / "eval_last" / "metrics.json").read_text()) for n in names]
        assert float(row["mean_firing_rate"]) == pytest.approx(statistics.fmean(m["mean_firing_rate"] for m in metrics))
        assert float(row["energy_sdt_uj_mean"]) == pytest.approx(statistics.fmean(m["totals"]["energy_snn_j"] * 1e6 for m in metrics))
        assert float(row["last10_top1_mean"]) == pytest.approx(statistics.fmean(
            statistics.fmean(float(r["eval_top1"]) for r in s) for s in summaries))  # 2 epochs: both
        if row["mode"] == "lif":
            assert row["verdict"] == "baseline" and row["vs_baseline"] == ""
        else:  # against LIF u_th 1 on the same seeds 42 and 43: paired
            lif = [float(read_summary(folder / "runs" / f"sdt-lif-uth1-seed{s}")[-1]["eval_top1"]) for s in (42, 43)]
            assert float(row["vs_baseline"]) == pytest.approx(statistics.fmean(final) - statistics.fmean(lif))
            spread = len({round(a - b, 6) for a, b in zip(final, lif)}) > 1
            assert row["test"] == "paired t-test, 2 seeds"
            if not spread:
                assert row["verdict"] in ("identical", "no spread between seeds: no interval")
    md = (folder / "results.md").read_text()
    assert "IF, soft reset" in md and "±" in md and "picked on test set" in md
    for name in ("curves.png", "firing.png", "tradeoff.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    assert "\\toprule" in (folder / "results.tex").read_text()
    study_yaml = (folder / "study.yaml").read_text()
    assert "epochs: 2" in study_yaml and "val_batch_size: 360" in study_yaml


@pytest.mark.slow
def test_second_invocation_trains_nothing(study, monkeypatch):
    folder, args, _ = study
    if not (folder / "results.csv").exists():
        assert main(args) == 0

    def no_training(*a, **k):
        raise AssertionError("a finished study trained again")

    monkeypatch.setattr(trainer, "train", no_training)
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/last.pth.tar")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/last.pth.tar")}


def test_dry_run_and_emitted_commands(tmp_path, capsys):
    args = [*STUDY, "--study-dir", str(tmp_path / "s")]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("pending") == 6 and not (tmp_path / "s").exists()  # 2 modes x 2 thresholds x 2 seeds, LIF's baseline at 1.0 only
    assert main([*args, "--emit-commands", "--devices", "0,1", "--nproc-per-run", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("torchrun --standalone --nproc_per_node=2 -m spikedriven train")
    assert "--epochs 2" in lines[0] and "--resume auto" in lines[0] and "&& spikedriven eval --checkpoint" in lines[0]


def test_study_flags_refuse_bad_input(tmp_path, capsys):
    assert main([*STUDY, "--modes", "lif,relu", "--dry-run"]) == 2
    assert "relu" in capsys.readouterr().err
    assert main([*STUDY, "--set", "batch_sise=3", "--dry-run"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main([*STUDY, "--set", "spike_mode=lif", "--dry-run"]) == 2
    assert "--modes" in capsys.readouterr().err


def test_parallel_runs_get_disjoint_cpu_shares():
    assert split_cpus(list(range(16)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert [len(s) for s in split_cpus(list(range(10)), 3)] == [4, 3, 3]
    assert split_cpus([2, 5], 1) == [[2, 5]]
    assert split_cpus([0, 1], 3) == [[0, 1]] * 3  # fewer CPUs than runs: each may use all


@pytest.mark.slow
def test_parallel_runs_with_devices(tmp_path, capsys):
    """--devices runs each job as its own process (cpu entries here; with GPU ids CUDA_VISIBLE_DEVICES picks
    the GPU), each on its own share of the CPUs, which its auto loader workers see."""
    folder = tmp_path / "parallel"
    args = ["study", "-c", str(ROOT / "conf/digits/demo.yml"), "--modes", "if", "--thresholds", "1.0", "--seeds", "2",
            "--epochs", "1", "--warmup-epochs", "0", "--embed-dim", "16", "--num-heads", "2", "--study-dir", str(folder),
            "--devices", "cpu,cpu", "--set", "workers=auto"]
    assert main(args) == 0
    assert sorted(p.name for p in (folder / "runs").glob("*.log")) == ["sdt-if-uth1-seed42.log", "sdt-if-uth1-seed43.log"]
    cpus = len(os.sched_getaffinity(0))
    logs = list((folder / "runs").glob("*/log.txt"))
    assert len(logs) == 2
    for log in logs:
        assert f"(auto, {cpus // 2 if cpus >= 2 else 1} CPUs)" in log.read_text()
    with open(folder / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["seeds"] == "2"


# ------------------------------------------------------------------ several architectures

MODELS = ["study", "-c", str(ROOT / "conf/digits/demo.yml"), "--models", "sdt,spikformer_cifar", "--modes", "lif,if_soft",
          "--thresholds", "1.0", "--seeds", "1", "--epochs", "1", "--warmup-epochs", "0", "--embed-dim", "16",
          "--num-heads", "2", "--set", "val_batch_size=360"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "digits"
    assert main([*MODELS, "--study-dir", str(folder)]) == 0
    return folder


@pytest.mark.slow
def test_a_study_over_two_architectures_compares_the_neurons_within_each(two_models):
    folder = two_models
    runs = sorted(p.name for p in (folder / "runs").iterdir() if p.is_dir())
    assert runs == ["sdt-if_soft-uth1-seed42", "sdt-lif-uth1-seed42", "spikformer_cifar-if_soft-uth1-seed42",
                    "spikformer_cifar-lif-uth1-seed42"]
    for run in runs:  # each run built its own model, at the size the demo's models: entry and the flags give
        recorded = json.loads((folder / "runs" / run / "eval_last" / "metrics.json").read_text())["config"]
        assert recorded["model"] == run.rsplit("-", 3)[0] and recorded["model_args"]["embed_dim"] == 16
    with open(folder / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["mode"]) for r in table] == [("sdt", "lif"), ("sdt", "if_soft"), ("spikformer_cifar", "lif"),
                                                        ("spikformer_cifar", "if_soft")]
    for row in table:  # each model's IF soft against its own LIF
        final = float(read_summary(folder / "runs" / f"{row['model']}-{row['mode']}-uth1-seed42")[-1]["eval_top1"])
        lif = float(read_summary(folder / "runs" / f"{row['model']}-lif-uth1-seed42")[-1]["eval_top1"])
        if row["mode"] == "lif":
            assert row["verdict"] == "baseline"
        else:
            assert float(row["vs_baseline"]) == pytest.approx(final - lif)
    md = (folder / "results.md").read_text()
    assert "sdt, depth 1, width 16; spikformer_cifar, depth 1, width 16" in md.splitlines()[0]
    assert "| spikformer_cifar, depth 1, width 16 | IF, soft reset |" in md and "in the same model" in md
    assert (folder / "firing.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_run_of_an_earlier_version_is_found_under_its_old_name_and_another_models_entry_leaves_it_fresh(
        two_models, tmp_path, capsys):
    folder = tmp_path / "copy"
    import shutil

    shutil.copytree(two_models, folder)
    (folder / "runs" / "sdt-lif-uth1-seed42").rename(folder / "runs" / "lif-uth1-seed42")  # as an earlier version named it
    conf = tmp_path / "demo.yml"
    conf.write_text((ROOT / "conf/digits/demo.yml").read_text().replace(
        "spikformer_cifar: {depth: 1, embed_dim: 64, num_heads: 4, mlp_ratio: 2}",
        "spikformer_cifar: {depth: 1, embed_dim: 64, num_heads: 4, mlp_ratio: 3}"))
    args = [*MODELS, "--study-dir", str(folder), "--dry-run"]
    args[2] = str(conf)
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split()[0] for line in lines if "->" in line}
    assert status["sdt-lif-uth1-seed42"] == "done" and status["sdt-if_soft-uth1-seed42"] == "done"
    assert any(line.endswith(str(folder / "runs" / "lif-uth1-seed42")) for line in lines)
    assert status["spikformer_cifar-lif-uth1-seed42"] == "stale"
    assert any("mlp_ratio 2 -> 3" in line for line in lines)


def test_a_study_refuses_a_model_it_does_not_know_and_settings_a_model_does_not_take(tmp_path, capsys):
    assert main([*MODELS, "--models", "sdt,spikeformer", "--dry-run"]) == 2
    assert "unknown model 'spikeformer'" in capsys.readouterr().err
    assert main([*MODELS, "--pooling-stat", "0000", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "spikformer_cifar takes no pooling_stat" in err and "models: {NAME: {...}}" in err
