"""The study's claims, end to end: eval with energy models, speed and membrane; study statistics, LaTeX,
the accuracy-energy plot, re-evaluation without retraining; the original code's run folders beside ours."""

import csv
import json
from pathlib import Path

import pytest

from spikedriven.engine import trainer
from spikedriven.cli import main

from helpers import DEMO

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--epochs", "1", "--warmup-epochs", "0", "--embed-dim", "16", "--num-heads", "2"]
STUDY = ["study", "-c", DEMO, "--modes", "lif,if_soft", "--thresholds", "1.0", "--seeds", "1", *SMALL]


def original_run(folder: Path, rows=None) -> Path:
    """A run folder as the original code writes it: args.yaml and timm's summary.csv."""
    folder.mkdir(parents=True)
    (folder / "args.yaml").write_text("model: sdt\nspike_mode: if_soft\nseed: 42\nepochs: 12\ndataset: torch/cifar10\n")
    rows = rows or [(e, 70.0 + e) for e in range(12)]
    lines = ["epoch,train_loss,eval_loss,eval_top1,eval_top5"] + [f"{e},1.0,0.9,{t},99.0" for e, t in rows]
    (folder / "summary.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("claims") / "study"
    args = [*STUDY, "--study-dir", str(folder), "--energy", "neuron", "--speed"]
    assert main(args) == 0
    return folder, args


def test_eval_prints_and_writes_three_energy_models_speed_and_membrane(study, tmp_path, capsys):
    folder, _ = study
    out_dir = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(folder / "runs" / "sdt-lif-uth1-seed42"), "--energy", "sdt,neuron,lemaire",
                 "--energy-constants", "e_read=2.5", "--speed", "--speed-repeats", "2", "--membrane",
                 "--eval-output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    for words in ("energy/image neuron", "energy/image lemaire", "e_read = 2.5 pJ", "convention (lemaire)",
                  "inference speed", "membrane potential per neuron layer", "block.0.attn.kv_neuron"):
        assert words in out, words
    metrics = json.loads((out_dir / "metrics.json").read_text())
    energy = metrics["energy"]
    assert list(energy) == ["sdt", "neuron", "lemaire"]
    assert energy["sdt"]["total_j"] == pytest.approx(metrics["totals"]["energy_snn_j"])
    assert energy["sdt"]["total_j"] < energy["neuron"]["total_j"] < energy["lemaire"]["total_j"]
    assert energy["lemaire"]["constants_pj"]["e_read"] == 2.5
    for name in ("sdt", "neuron", "lemaire"):
        rows = list(csv.DictReader((out_dir / f"energy_{name}.csv").open()))
        assert rows[-1]["component"] == "total"
        assert float(rows[-1]["energy_pj"]) == pytest.approx(energy[name]["total_j"] * 1e12, rel=1e-6)
    speed = list(csv.DictReader((out_dir / "speed.csv").open()))
    assert {(r["path"], r["batch"]) for r in speed} == {("fused", "1"), ("fused", "128"), ("loop", "1"), ("loop", "128")}
    assert all(float(r["images_per_s"]) > 0 for r in speed if r["path"] == "loop")
    assert all(r["repeats"] == "2" and r["device"] == "cpu" and r["dtype"] == "float32" for r in speed)
    layers = {r["layer"] for r in metrics["membrane"]["layers"]}
    assert "block.0.attn.kv_neuron" in layers and len(layers) == len(metrics["firing_rates"])
    assert (out_dir / "membrane.png").read_bytes()[:8] == PNG
    assert (out_dir / "membrane.csv").stat().st_size and (out_dir / "membrane_hist.csv").stat().st_size
    # recording the membrane runs the per-step loop: the spikes, and so the accuracy, are the same
    plain = json.loads((folder / "runs" / "sdt-lif-uth1-seed42" / "eval_last" / "metrics.json").read_text())
    assert metrics["top1"] == plain["top1"] and metrics["firing_rates"] == plain["firing_rates"]


def test_study_tables_carry_energy_models_speed_and_statistics(study):
    folder, _ = study
    rows = {r["mode"]: r for r in csv.DictReader((folder / "results.csv").open())}
    assert rows["lif"]["verdict"] == "baseline"
    assert rows["if_soft"]["verdict"] == "one seed: no interval"  # not nan: no interval with one seed
    assert rows["if_soft"]["vs_baseline"] and not rows["if_soft"]["vs_baseline_low"]
    assert float(rows["if_soft"]["vs_baseline"]) == pytest.approx(
        float(rows["if_soft"]["final_top1_mean"]) - float(rows["lif"]["final_top1_mean"]))
    for row in rows.values():
        run = folder / "runs" / f"sdt-{row['mode']}-uth1-seed42"
        metrics = json.loads((run / "eval_last" / "metrics.json").read_text())
        assert float(row["energy_neuron_uj_mean"]) == pytest.approx(metrics["energy"]["neuron"]["total_j"] * 1e6)
        assert float(row["loop_images_per_s"]) > 0 and row["fused_images_per_s"] == ""  # no CUDA here
        summary = list(csv.DictReader((run / "summary.csv").open()))
        assert float(row["last10_top1_mean"]) == pytest.approx(float(summary[-1]["eval_top1"]))  # one epoch
    md = (folder / "results.md").read_text()
    for words in ("Δ final [95 % CI]", "verdict", "one seed: no interval", "energy neuron (uJ)", "energy sdt (uJ)",
                  "loop images/s (batch 128)", "mean of last epoch", "`neuron`: per image"):
        assert words in md, words
    assert "nan" not in md.lower()
    tex = (folder / "results.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\mathbf{" in tex
    assert (folder / "tradeoff.png").read_bytes()[:8] == PNG


def test_a_study_adding_an_energy_model_re_evaluates_without_training(study, monkeypatch, capsys):
    folder, args = study

    def no_training(*a, **k):
        raise AssertionError("the study trained a finished run again")

    monkeypatch.setattr(trainer, "train", no_training)
    assert main([*STUDY, "--study-dir", str(folder), "--energy", "neuron,lemaire", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("to evaluate") == 2
    assert main([*STUDY, "--study-dir", str(folder), "--energy", "neuron,lemaire"]) == 0
    md = (folder / "results.md").read_text()
    assert "energy lemaire (uJ)" in md and "loop images/s" not in md


def test_study_reads_runs_of_the_original_code_beside_its_own(study, tmp_path, capsys):
    folder, args = study
    theirs = original_run(tmp_path / "orig-if_soft")
    lif = original_run(tmp_path / "orig-lif", rows=[(e, 60.0 + e) for e in range(12)])
    (lif / "args.yaml").unlink()  # summary.csv alone: its neuron comes from the label
    assert main([*args, "--with-runs", str(theirs), f"{lif}:lif@1"]) == 0
    md = (folder / "results.md").read_text()
    assert "Runs of the original code" in md and "orig-if_soft" in md and "original code" in md
    assert "81.00" in md and "76.50" in md  # final epoch 11: 81; the last 10 epochs (2..11): mean 76.5
    # the labelled LIF run has a row of its own in the accuracy table; the IF soft run records no threshold
    lines = [line for line in md.splitlines() if "given runs" in line and line.startswith("|")]
    assert lines == ["| model not recorded, given runs | LIF, hard reset | 1 (label) | 1 run | 71.00 | - | 71.00 | 66.50 | - | - | - "
                     "| baseline | 71.00* |"]


def test_compare_tabulates_an_original_run_folder_and_ours(study, tmp_path, capsys):
    folder, _ = study
    theirs = original_run(tmp_path / "orig")
    ours = folder / "runs" / "sdt-if_soft-uth1-seed42"
    assert main(["compare", str(theirs), str(ours), "--output", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "training runs" in out and "original code" in out and "spikedriven" in out
    assert "energy uJ (sdt)" in out and "neuron uJ" in out and "loop img/s" in out  # ours was evaluated
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("make, words", [
    (lambda d: original_run(d, rows=[(0, "x")]), "where a number is expected"),
    (lambda d: (d.mkdir(), (d / "args.yaml").write_text("seed: 1\n")), "has no summary.csv"),
])
def test_a_malformed_original_run_is_one_sentence(make, words, tmp_path, capsys):
    make(tmp_path / "bad")
    assert main(["compare", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_bad_baseline_and_with_runs_stop_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("trained despite bad input"))
    base = [*STUDY, "--study-dir", str(tmp_path / "s")]
    assert main([*base, "--baseline", "if:1.0"]) == 2
    assert "--baseline if:1.0 is not a setting of this study" in capsys.readouterr().err
    assert main([*base, "--baseline", "if_soft:high"]) == 2
    assert "MODE:U_TH" in capsys.readouterr().err
    assert main([*base, "--baseline", "nope"]) == 2
    assert main([*base, "--with-runs", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([*base, "--energy", "sdt,watts"]) == 2
    assert "unknown energy model 'watts'" in capsys.readouterr().err


def test_report_only_tabulates_what_exists_and_lists_what_is_missing(study, monkeypatch, capsys):
    folder, args = study

    def no_training(*a, **k):
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(trainer, "train", no_training)
    grown = [a if a != "1" or prev != "--seeds" else "2" for prev, a in zip(["", *STUDY], STUDY)]
    assert main([*grown, "--study-dir", str(folder), "--energy", "neuron", "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "missing  sdt-lif-uth1-seed43 (not trained)" in out and "missing  sdt-if_soft-uth1-seed43 (not trained)" in out
    assert "2 of 4 runs tabulated; nothing was trained (--report-only)" in out
    assert "| LIF, hard reset | 1 | 1 |" in (folder / "results.md").read_text()
    assert not (folder / "runs" / "sdt-lif-uth1-seed43").exists()
    code = main([*STUDY, "--study-dir", str(folder), "--report-only", "--dry-run"])
    assert code == 2 and "give one" in capsys.readouterr().err
