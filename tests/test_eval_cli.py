"""`spikedriven eval` / firing_num.py and `compare` end to end on tiny generated data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.models import build_model
from spikedriven.testing import write_fake_cifar

from helpers import TINY_RUN
from helpers import original_style_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf/cifar10/2_256_300E_t4.yml")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    data = write_fake_cifar(base / "data", n_train=40, n_test=13, seed=5)
    run = base / "run"
    assert main(["train", "-c", CONF, "--data-dir", str(data), *TINY_RUN, "--epochs", "1",
                 "--spike-mode", "if_soft", "--v-threshold", "0.8", "--output", str(run)]) == 0
    return data, run


def test_study_command_line_writes_every_report(trained):
    data, run = trained
    cmd = [sys.executable, str(ROOT / "firing_num.py"), "-c", CONF, "--model", "sdt", "--spike-mode", "if_soft",
           "--resume", str(run / "best.pth.tar"), "--no-resume-opt", "--data-dir", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "convention" in proc.stdout and "block.0.attn.kv_neuron" in proc.stdout
    folder = run / "eval_best"
    for name in ("metrics.json", "firing_rates.csv", "energy.csv"):
        assert (folder / name).stat().st_size > 0
    for name in ("firing_rates.png", "energy.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["samples"] == 13 and metrics["time_steps"] == 2
    assert metrics["neuron"]["mode"] == "if_soft" and metrics["neuron"]["v_threshold"] == 0.8  # from the checkpoint
    assert metrics["attn_neuron"]["v_threshold"] == 0.5
    assert metrics["config"]["v_threshold"] == 0.8


def test_contradicting_flag_is_refused_unless_override(trained, tmp_path, capsys):
    data, run = trained
    ckpt = str(run / "last.pth.tar")
    assert main(["eval", "--checkpoint", ckpt, "--spike-mode", "lif", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "spike_mode='lif' (checkpoint: 'if_soft')" in err and "--override" in err
    assert main(["eval", "--checkpoint", ckpt, "--v-threshold", "1.0", "--data-dir", str(data)]) == 2
    assert main(["eval", "--checkpoint", ckpt, "--v-threshold", "1.0", "--override", "--data-dir", str(data),
                 "--eval-output", str(tmp_path / "ov")]) == 0
    metrics = json.loads((tmp_path / "ov" / "metrics.json").read_text())
    assert metrics["neuron"]["v_threshold"] == 1.0 and metrics["overridden_settings"]


def test_original_checkpoint_evaluates_end_to_end(trained, tmp_path, capsys):
    data, _ = trained
    overrides = {"dim": 32, "layer": 1, "time_steps": 2, "spike_mode": "if_soft"}
    model = build_model(load_config(CONF, overrides))
    path = tmp_path / "model_best.pth.tar"
    original_style_checkpoint(model, path)  # its args record dim 32, layer 1, T 2, if_soft
    args = ["eval", "-c", CONF, "--resume", str(path), "--no-resume-opt", "--data-dir", str(data), "--workers", "0",
            "--dim", "32", "--layer", "1", "--time-steps", "2", "--spike-mode", "if_soft"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "eval_model_best" / "metrics.json").read_text())
    assert metrics["checkpoint_format"] == "original" and metrics["samples"] == 13
    # a flag contradicting the recorded arguments is caught for original checkpoints too
    capsys.readouterr()
    assert main([*args[:-1], "lif"]) == 2
    assert "spike_mode='lif'" in capsys.readouterr().err
    # and a checkpoint of another size fails with the loader's message
    assert main([*args, "--dim", "64", "--override"]) == 2
    assert "does not fit the model" in capsys.readouterr().err


def test_the_compare_command_puts_two_evaluations_of_a_checkpoint_side_by_side(trained, tmp_path, capsys):
    data, run = trained
    for thr in ("0.8", "1.2"):
        extra = [] if thr == "0.8" else ["--v-threshold", thr, "--override"]
        assert main(["eval", "--checkpoint", str(run / "last.pth.tar"), "--data-dir", str(data),
                     "--eval-output", str(tmp_path / f"uth{thr}"), *extra]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "uth0.8"), str(tmp_path / "uth1.2"), "--output", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "uth0.8" in out and "uth1.2" in out and "if_soft" in out
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == PNG
