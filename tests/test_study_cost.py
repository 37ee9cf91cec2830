"""What a study says before it runs (its grid, where each axis's values came from, the time it will take),
the warning of a recipe that stops inside its warm-up or before mixup switches off, and the tables a reader
reads first: per-seed values, the recipe, sizes spelled out, the mean of the last epochs without warm-up."""

import contextlib
import csv
import io
import json
import re
import statistics

import pytest

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.engine.recipe import schedule_warning
from spikedriven.models import architecture_of
from spikedriven.study import cost
from spikedriven.study.tables import _warmup_note, last_epochs_mean

from helpers import DEMO, read_summary, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--epochs", "2", "--warmup-epochs", "0", "--embed-dim", "16", "--num-heads", "2"]
GRID = ["study", "-c", DEMO, "--modes", "lif,if", "--seeds", "2", *TINY]  # lif at 1.0, if at 0.8, 1.0, 1.2


def _estimate(out: str) -> tuple[float, int]:
    """The seconds an epoch and the epochs still to train, as the time line says them."""
    line = next(line for line in out.splitlines() if line.startswith("time:"))
    found = re.search(r"for the (\d+) epochs still to train, at ([0-9.e+-]+) s an epoch", line)
    return float(found.group(2)), int(found.group(1))


def test_a_dry_run_says_the_grid_where_its_values_came_from_and_a_probed_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cost, "PROBE_SECONDS", 0.6)
    code, out, err = run_cli([*GRID, "--study-dir", str(tmp_path / "s"), "--dry-run"], capsys)
    assert code == 0, err
    for words in ("8 runs (1 model x 4 neuron settings x 2 seeds), 2 epochs each, 16 epochs in total, 16 of them "
                  "still to train",
                  "--models not given: the config's model, sdt, depth 1, width 16",
                  "--thresholds not given: the non-leaky modes if run at 0.8, 1.0, 1.2 (default)",
                  "--lif-thresholds not given: the leaky modes lif run at 1.0 (default)",
                  "--seeds 2: 42, 43", "from a probe of sdt-lif-uth1-seed42's model on this machine",
                  "training only: the per-epoch evaluation and each run's final evaluation are not included"):
        assert words in out, words
    per_epoch, epochs = _estimate(out)
    assert per_epoch > 0 and epochs == 16
    assert out.count("pending") == 8 and "warning" not in out and not (tmp_path / "s").exists()


def test_the_estimate_takes_the_rate_of_finished_runs_and_an_interrupted_run_is_called_so(tmp_path, capsys,
                                                                                          monkeypatch):
    runs = tmp_path / "s" / "runs"
    header = "epoch,eval_top1,train_seconds,epoch_seconds"
    finished, stopped = runs / "sdt-lif-uth1-seed42", runs / "sdt-if-uth1-seed43"
    finished.mkdir(parents=True)
    (finished / "summary.csv").write_text(f"{header}\n0,50.0,2.5,3.0\n1,60.0,4.0,5.0\n")
    (finished / "results.json").write_text(json.dumps({"final_top1": 60.0, "best_top1": 60.0, "eval_set": "test"}))
    stopped.mkdir()
    (stopped / "summary.csv").write_text(f"{header}\n0,40.0,1.0,1.0\n")  # its rate is not a finished run's
    (stopped / "last.pth.tar").write_bytes(b"")
    (runs / "sdt-if-uth0.8-seed42").mkdir()  # a folder without a checkpoint starts again

    def no_probe(cfg):
        raise AssertionError("probed although a run of the study has finished")

    monkeypatch.setattr(cost, "probe_epoch", no_probe)
    code, out, err = run_cli([*GRID, "--study-dir", str(tmp_path / "s"), "--dry-run"], capsys)
    assert code == 0, err
    state = {line.split()[1]: line.split()[0] for line in out.splitlines() if "->" in line}
    assert state["sdt-if-uth1-seed43"] == "interrupted" and "(1 of 2 epochs trained)" in out
    assert state["sdt-if-uth0.8-seed42"] == "pending" and out.count("pending") == 6
    assert "16 epochs in total, 13 of them still to train" in out  # 2 trained, 1 of the interrupted run's
    per_epoch, epochs = _estimate(out)
    assert (per_epoch, epochs) == (4.0, 13)  # the mean of 3 s and 5 s
    assert "time: about 52 s" in out and "the mean over 2 epochs of the 1 run of this study already finished" in out


def test_bad_thresholds_say_they_must_be_numbers(capsys):
    code, _, err = run_cli([*GRID, "--thresholds", "0.8,abc", "--dry-run"], capsys)
    assert code == 2 and "--thresholds must be a comma-separated list of numbers" in err
    assert "got '0.8,abc' ('abc' is not one)" in err and "Traceback" not in err


def test_a_recipe_that_stops_inside_its_warm_up_or_before_mixup_ends_is_warned_once(tmp_path, capsys, caplog,
                                                                                    monkeypatch):
    assert schedule_warning(load_config(DEMO, {})) is None
    short = schedule_warning(load_config(DEMO, {"epochs": 2, "warmup_epochs": 2}))
    assert short.startswith("the run ends inside its warm-up (epochs 2, warmup_epochs 2)")
    mixup = {"mixup": 0.8, "epochs": 3, "cooldown_epochs": 1, "mixup_off_epoch": 4}
    assert "mixup never switches off: mixup_off_epoch 4 is at or after the run's 4 epochs" in schedule_warning(
        load_config(DEMO, mixup))
    assert schedule_warning(load_config(DEMO, {**mixup, "mixup_off_epoch": 0})) is None  # on throughout, as asked
    assert schedule_warning(load_config(DEMO, {**mixup, "mixup_off_epoch": 3})) is None

    # a run warns once it is set up (so that an error in its input is never preceded by the warning), into its log
    code, _, err = run_cli(["train", "-c", DEMO, "--epochs", "1", "--warmup-epochs", "3", "--embed-dim", "16",
                            "--num-heads", "2", "--output", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "log.txt").read_text().count("warning: the run ends inside its warm-up") == 1
    monkeypatch.setattr(cost, "probe_epoch", lambda cfg: (1.0, "a stand-in for the probe"))
    code, out, _ = run_cli([*GRID, "--warmup-epochs", "2", "--study-dir", str(tmp_path / "s"), "--dry-run"], capsys)
    assert code == 0 and out.count("warning: the run ends inside its warm-up") == 1  # once for its 8 runs


def test_the_mean_of_the_last_epochs_leaves_the_warm_up_out():
    curve = [(0, 10.0), (1, 20.0), (2, 30.0), (3, 40.0)]
    assert last_epochs_mean(curve, 0) == (25.0, 4, 0)
    assert last_epochs_mean(curve, 2) == (35.0, 2, 0)  # epochs 2 and 3 follow a warm-up of two
    assert last_epochs_mean(curve, 1, n=2) == (35.0, 2, 0)
    assert last_epochs_mean(curve, 5) == (25.0, 4, 4)  # it ended inside its warm-up: nothing else to average
    long = [(e, float(e)) for e in range(12)]
    assert last_epochs_mean(long, 1) == (statistics.fmean(range(2, 12)), 10, 0)
    cfg = load_config(DEMO, {"warmup_epochs": 5})
    assert "‡: these runs end inside their warm-up" in _warmup_note([{"last10_warmup_epochs": 4}], cfg)
    assert "leaving out the warm-up (the first 5 epochs" in _warmup_note([{"last10_warmup_epochs": 0}], cfg)


def test_sizes_are_spelled_out_beside_the_published_figures_short_label():
    sdt = architecture_of("sdt")
    settings = sdt.defaults("sdt") | {"depth": 2, "embed_dim": 256}
    assert sdt.size_text("sdt", settings) == "sdt, depth 2, width 256"
    assert sdt.size_label("sdt", settings) == "sdt 2-256"
    v2 = architecture_of("metaspikformer_8_384")
    assert v2.size_text("metaspikformer_8_384", v2.defaults("metaspikformer_8_384")) == \
        "metaspikformer_8_384, depths 6-2, widths 96-192-384-480"


@pytest.fixture(scope="module")
def warm_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cost") / "study"
    args = ["study", "-c", DEMO, "--modes", "if_soft", "--thresholds", "1.0", "--seeds", "2", *TINY,
            "--warmup-epochs", "1", "--time-steps", "1", "--set", "val_batch_size=360", "--study-dir", str(folder)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost, "PROBE_SECONDS", 0.3)
        assert main(args) == 0
    return folder, err.getvalue()


@pytest.mark.slow
def test_a_study_logs_its_cost_and_tabulates_per_seed_the_recipe_and_the_last_epochs_after_warm_up(warm_study):
    folder, log = warm_study
    assert "study: 2 runs (1 model x 1 neuron setting x 2 seeds), 2 epochs each" in log
    assert "study: --seeds 2: 42, 43" in log and "study: time: about" in log
    with open(folder / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    summaries = [read_summary(folder / "runs" / f"sdt-if_soft-uth1-seed{s}") for s in (42, 43)]
    finals = [float(s[-1]["eval_top1"]) for s in summaries]
    assert row["final_top1_per_seed"] == f"{finals[0]:.2f} (42), {finals[1]:.2f} (43)"
    assert float(row["last10_top1_mean"]) == pytest.approx(statistics.fmean(finals))  # epoch 0 is the warm-up
    assert row["last10_epochs"] == "1" and row["last10_warmup_epochs"] == "0"
    assert row["size"] == "sdt, depth 1, width 16"
    assert "energy_uj_per_image" not in row and float(row["energy_sdt_uj_mean"]) > 0
    md = (folder / "results.md").read_text()
    assert md.splitlines()[0] == "# Neuron-model study on sklearn/digits (T = 1, 2 epochs): sdt, depth 1, width 16"
    assert ("Recipe: adamw, lr 0.003, weight decay 0.01, batch size 32, cosine schedule over 2 epochs, 1 warm-up "
            "epoch from lr 0.0001, T = 1, no mixup, label smoothing 0.1.") in md
    assert f"| {finals[0]:.2f} (42), {finals[1]:.2f} (43) |" in md
    assert "leaving out the warm-up (the first 1 epoch" in md
