"""Run folders of this toolkit and of the original code, read into the same curves and tables."""

import pytest
import yaml

from spikedriven.errors import ConfigError
from spikedriven.analysis.runs import RunCurve, is_run_folder, read_run, runs_markdown, runs_table

# The original code's (timm's) column order, lr last.
TIMM_HEADER = "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr"
OURS_HEADER = "epoch,lr,train_loss,eval_loss,eval_top1,eval_top5,train_seconds,epoch_seconds,images_per_s"

# 12 epochs; 82.0 is reached at epoch 7 and again at 9, so the best is the first of the two.
ORIGINAL_TOP1 = [40.0, 55.5, 63.25, 70.0, 74.5, 78.0, 80.5, 82.0, 81.0, 82.0, 81.5, 81.75]
ORIGINAL_TOP5 = [80.0 + e for e in range(12)]
OURS_TOP1 = [50.0, 60.0, 65.5, 64.0, 66.25]


def write_original(folder, top1=ORIGINAL_TOP1, args=None):
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"model": "sdt", "dataset": "torch/cifar10", "spike_mode": "if_soft", "seed": 42, "epochs": 12,
                "lr": 0.0003, "batch_size": 64, "input_size": [3, 32, 32], "time_steps": 4, "resume": ""}
    settings.update(args or {})
    (folder / "args.yaml").write_text(yaml.safe_dump(settings, default_flow_style=False))
    rows = [TIMM_HEADER] + [f"{e},{2.0 - 0.1 * e:.2f},{1.5 - 0.05 * e:.2f},{t1},{ORIGINAL_TOP5[e]},0.0003"
                            for e, t1 in enumerate(top1)]
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_ours(folder, top1=OURS_TOP1, **config):
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": "torch/cifar10", "spike_mode": "lif", "v_threshold": 1.0, "seed": 1, "epochs": 5,
                "time_steps": 4}
    settings.update(config)
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    rows = [OURS_HEADER] + [f"{e},0.0003,1.2,1.1,{t1},{90 + e},12.5,14.0,4000.0" for e, t1 in enumerate(top1)]
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")
    return folder


# ------------------------------------------------------------------ reading


def test_original_code_run(tmp_path):
    folder = write_original(tmp_path / "sdt-if_soft-seed42")
    assert is_run_folder(folder)
    run = read_run(folder)
    assert run.source == "original code"
    assert run.label == "sdt-if_soft-seed42"
    assert run.epochs == list(range(12))
    assert run.eval_top1 == ORIGINAL_TOP1
    assert run.eval_top5 == ORIGINAL_TOP5
    assert (run.mode, run.seed, run.dataset) == ("if_soft", 42, "torch/cifar10")
    assert run.v_threshold is None and run.threshold_recorded is False

    assert run.best == (82.0, 7)  # first of the tie with epoch 9
    assert run.final == 81.75
    # Only the last 10 of the 12 epochs (2 .. 11): 774.5 / 10; all 12 would give 72.5.
    last10 = (63.25 + 70.0 + 74.5 + 78.0 + 80.5 + 82.0 + 81.0 + 82.0 + 81.5 + 81.75) / 10
    assert last10 == pytest.approx(77.45)
    assert run.last_mean() == pytest.approx(last10)
    assert run.last_mean(3) == pytest.approx((82.0 + 81.5 + 81.75) / 3)
    assert run.figures() == {"best_top1": 82.0, "best_epoch": 7, "final_top1": 81.75,
                             "last10_top1": pytest.approx(77.45), "epochs": 12}


def test_original_code_threshold_when_recorded(tmp_path):
    run = read_run(write_original(tmp_path / "r", args={"v_threshold": 0.8}))
    assert run.v_threshold == 0.8 and run.threshold_recorded is True


def test_our_run(tmp_path):
    folder = write_ours(tmp_path / "lif-uth1-seed1")
    assert is_run_folder(folder)
    run = read_run(folder, label="LIF seed 1")
    assert run.source == "spikedriven"
    assert run.label == "LIF seed 1"
    assert (run.mode, run.v_threshold, run.threshold_recorded, run.seed) == ("lif", 1.0, True, 1)
    assert run.eval_top5 == [90.0, 91.0, 92.0, 93.0, 94.0]
    assert run.best == (66.25, 4)
    assert run.final == 66.25
    assert run.last_mean() == pytest.approx((50.0 + 60.0 + 65.5 + 64.0 + 66.25) / 5)  # 5 epochs, fewer than 10
    assert run.figures()["last10_top1"] == pytest.approx(61.15)


def test_our_neuron_without_threshold(tmp_path):
    run = read_run(write_ours(tmp_path / "plif", spike_mode="plif", v_threshold=None))
    assert run.v_threshold is None and run.threshold_recorded is True
    assert "| plif | - |" in runs_markdown([run])


def test_resumed_original_run(tmp_path):
    # timm rewrites the header at every start; this run was resumed from epoch 1's checkpoint after epoch 2.
    folder = tmp_path / "resumed"
    write_original(folder)
    (folder / "summary.csv").write_text(
        f"{TIMM_HEADER}\n0,2,1.5,40.0,80.0,1\n1,2,1.5,50.0,81.0,1\n2,2,1.5,55.0,82.0,1\n"
        f"{TIMM_HEADER}\n2,2,1.5,57.0,82.5,1\n3,2,1.5,58.0,83.0,1\n")
    run = read_run(folder)
    assert run.epochs == [0, 1, 2, 3]
    assert run.eval_top1 == [40.0, 50.0, 57.0, 58.0]


def test_not_run_folders(tmp_path):
    assert not is_run_folder(tmp_path / "missing")
    (tmp_path / "summary.csv").write_text(TIMM_HEADER + "\n")
    assert not is_run_folder(tmp_path)


# ------------------------------------------------------------------ tables


def test_runs_table_and_markdown(tmp_path):
    original = read_run(write_original(tmp_path / "orig"))
    ours = read_run(write_ours(tmp_path / "ours"))
    text = runs_table([original, ours])
    lines = text.splitlines()
    header, rule, row_orig, row_ours = lines
    for cell in ("run", "source", "model", "mode", "u_th", "epochs", "best top-1 (epoch)", "final top-1", "mean of last 10"):
        assert cell in header
    assert set(rule) <= {"-", " "}
    assert row_orig.split()[:5] == ["orig", "original", "code", "sdt", "if_soft"]
    for cell in ("not recorded", "12", "82.00 (7)", "81.75", "77.45"):
        assert cell in row_orig
    for cell in ("spikedriven", "sdt", "lif", "66.25 (4)", "61.15 (last 5)"):  # an earlier version's config: sdt
        assert cell in row_ours
    assert " 1 " in row_ours  # u_th 1.0 printed as 1
    # Numbers are right-aligned: each ends where its header ends.
    best_end = header.index("best top-1 (epoch)") + len("best top-1 (epoch)")
    assert row_orig[best_end - len("82.00 (7)"):best_end] == "82.00 (7)"
    assert row_ours[best_end - len("66.25 (4)"):best_end] == "66.25 (4)"
    assert row_ours.endswith("61.15 (last 5)")
    assert row_orig.endswith(" 77.45")

    md = runs_markdown([original, ours]).splitlines()
    assert md[0] == ("| run | source | model | mode | u_th | epochs | best top-1 (epoch) | final top-1 | mean of last 10 |")
    assert md[1] == "|---|---|---|---|---|---:|---:|---:|---:|"
    assert md[2] == "| orig | original code | sdt | if_soft | not recorded | 12 | 82.00 (7) | 81.75 | 77.45 |"
    assert md[3] == "| ours | spikedriven | sdt | lif | 1 | 5 | 66.25 (4) | 66.25 | 61.15 (last 5) |"


def test_empty_table():
    assert runs_table([]).splitlines()[0].startswith("run")
    assert len(runs_markdown([]).splitlines()) == 2


def test_run_curve_defaults_label_to_folder(tmp_path):
    run = RunCurve(tmp_path / "x", "spikedriven", [0, 1], [1.0, 2.0], [3.0, 4.0], "if", 1.0, True, 0, None)
    assert run.label == "x"
    assert run.best == (2.0, 1)


# ------------------------------------------------------------------ malformed


def check_error(read, path, *words):
    """``read()`` raises a ConfigError whose one-sentence message names ``path`` and holds ``words``."""
    with pytest.raises(ConfigError) as info:
        read()
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    assert message.endswith("") and "\n" not in message, message


def test_missing_folder(tmp_path):
    check_error(lambda: read_run(tmp_path / "nope"), tmp_path / "nope", "does not exist")


def test_no_summary(tmp_path):
    folder = write_original(tmp_path / "r")
    (folder / "summary.csv").unlink()
    check_error(lambda: read_run(folder), folder, "summary.csv")


def test_no_settings_file(tmp_path):
    # published folders of the original code often hold the summary alone: read, with the settings unknown
    folder = write_original(tmp_path / "r")
    (folder / "args.yaml").unlink()
    assert not is_run_folder(folder)
    run = read_run(folder)
    assert (run.source, run.mode, run.v_threshold, run.threshold_recorded) == ("original code", None, None, False)
    assert run.best == (82.0, 7)


@pytest.mark.parametrize("content, words", [
    ("", ("empty",)),
    (TIMM_HEADER + "\n", ("no epochs",)),
    ("epoch,train_loss,eval_loss,eval_top5\n0,1,1,90\n", ("eval_top1",)),
    ("epoch,train_loss\n0,1\n", ("eval_top1", "eval_top5")),
    (TIMM_HEADER + "\n0,2,1,40.0,80.0,1\n1,2,1,abc,81.0,1\n", ("'abc'", "row 2", "line 3", "eval_top1")),
    (TIMM_HEADER + "\n0,2,1,40.0,80.0,1\n1,2,1,41.0\n", ("row 2", "eval_top5", "nothing")),
    (TIMM_HEADER + "\n0,2,1,nan,80.0,1\n", ("row 1", "eval_top1")),
    (TIMM_HEADER + "\n0.5,2,1,40.0,80.0,1\n", ("row 1", "epoch", "whole number")),
])
def test_malformed_summary(tmp_path, content, words):
    folder = write_original(tmp_path / "r")
    (folder / "summary.csv").write_text(content)
    check_error(lambda: read_run(folder), folder / "summary.csv", *words)


@pytest.mark.parametrize("name, content, words", [
    ("args.yaml", "model: [sdt\n", ("not valid YAML",)),
    ("args.yaml", "- 1\n- 2\n", ("not a mapping",)),
    ("args.yaml", "", ("not a mapping",)),
    ("args.yaml", "seed: forty-two\n", ("seed", "forty-two")),
    ("args.yaml", "spike_mode: 3\n", ("spike_mode",)),
    ("config.yaml", "v_threshold: high\n", ("v_threshold", "high")),
])
def test_malformed_settings(tmp_path, name, content, words):
    folder = write_original(tmp_path / "r") if name == "args.yaml" else write_ours(tmp_path / "r")
    (folder / name).write_text(content)
    check_error(lambda: read_run(folder), folder / name, *words)
