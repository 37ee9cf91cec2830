"""Experiment tracking: TensorBoard always, Weights & Biases (offline mode) with --log-wandb, the same scalars."""

import json
import sys
from pathlib import Path

import pytest

from spikedriven.cli import main
from spikedriven.engine.run_folder import holds_run

from helpers import DEMO, read_summary, read_wandb_offline

pytest.importorskip("wandb")

SMALL = ["--warmup-epochs", "0", "--cooldown-epochs", "0", "--embed-dim", "16", "--num-heads", "2", "--workers", "0",
         "--device", "cpu"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "sdt-tests")
    # wandb keeps settings and caches under these; a test run must not touch the user's
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def tensorboard_scalars(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_log_wandb_logs_the_tensorboard_scalars_and_the_results_offline(tmp_path, offline):
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--epochs", "2", "--output", str(run), "--log-wandb"]) == 0
    (logged,) = read_wandb_offline(run)
    assert logged["id"] == (run / "wandb_run_id").read_text().strip()
    assert logged["config"]["spike_mode"] == "lif" and logged["config"]["epochs"] == 2
    assert [row["epoch"] for row in logged["history"]] == [0, 1]
    # every TensorBoard scalar, with its value, is in W&B's history at the same epoch (float32 there)
    board = tensorboard_scalars(run)
    assert {"train/lr", "train/train_loss", "test/eval_top1", "firing_rate/mean"} <= set(board)
    for row in logged["history"]:
        assert set(row) - {"epoch"} == set(board)
        for tag, value in row.items():
            if tag != "epoch":
                assert board[tag][row["epoch"]] == pytest.approx(value, rel=1e-6), tag
    for row, csv_row in zip(logged["history"], read_summary(run)):
        assert row["test/eval_top1"] == pytest.approx(float(csv_row["eval_top1"]))
    results = json.loads((run / "results.json").read_text())
    assert logged["summary"]["best_top1"] == results["best_top1"]
    assert logged["summary"]["final_epoch"] == 1


def test_a_resumed_run_continues_its_wandb_run(tmp_path, offline):
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--epochs", "1", "--output", str(run), "--log-wandb"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--log-wandb"]) == 0
    first, second = read_wandb_offline(run)
    assert first["id"] == second["id"]
    assert [row["epoch"] for row in first["history"] + second["history"]] == [0, 1]


def test_log_wandb_without_wandb_installed_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--epochs", "1", "--output", str(run), "--log-wandb"]) == 2
    err = capsys.readouterr().err
    assert "error: log_wandb needs Weights & Biases, which is not installed: pip install 'spikedriven[wandb]'" in err
    assert "Traceback" not in err and not run.exists()


def test_a_wandb_run_that_cannot_start_is_one_sentence(tmp_path, offline, monkeypatch, capsys):
    import wandb

    def refuse(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty).\ncall wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "init", refuse)
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--epochs", "1", "--output", str(run), "--log-wandb"]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert "Weights & Biases could not start a run (api_key not configured (no-tty). call wandb.login" in line
    assert "WANDB_MODE=offline" in line and "Traceback" not in err
    # nothing was trained: the folder is not a run, and the same command may simply be given again
    assert not holds_run(run)


def test_log_wandb_false_and_the_original_key_are_read(tmp_path, capsys):
    from spikedriven.config import load_config

    assert load_config(None, {"log_wandb": "false"}).log_wandb is False
    path = tmp_path / "c.yml"
    path.write_text("log_wandb: true\n")
    assert load_config(path, {}).log_wandb is True
