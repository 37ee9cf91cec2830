"""Neurons of one's own: the README's example plugin, trained, evaluated and resumed in new processes,
and what happens when its file is gone."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import DEMO, read_summary

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--embed-dim", "16", "--num-heads", "2", "--epochs", "2", "--warmup-epochs", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def readme_plugin() -> str:
    from docs_text import block_with

    plugin = block_with("python", "@register_neuron")  # docs/tutorials/your-own-neuron.md
    assert len(plugin.strip().splitlines()) <= 25  # short enough to read at a glance
    return plugin


def spikedriven(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spikedriven", *args], capture_output=True, text=True, env=ENV,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugin")
    (base / "my_neurons.py").write_text(readme_plugin())
    run = base / "run"
    # from the plugin's folder with a relative path, as a user would; the run records where it is
    done = spikedriven("train", "-c", DEMO, *SMALL, "--plugins", "my_neurons.py", "--spike-mode", "beta_lif",
                       "--beta", "0.8", "--output", str(run), cwd=base)
    assert done.returncode == 0, done.stderr
    return base, run, done.stderr


def test_the_readme_plugin_is_listed(tmp_path):
    (tmp_path / "my_neurons.py").write_text(readme_plugin())
    done = spikedriven("neurons", "--plugins", str(tmp_path / "my_neurons.py"))
    assert done.returncode == 0, done.stderr
    assert "beta_lif: LIF, decay factor beta, hard reset to 0" in done.stdout
    assert "--beta" in done.stdout and "no fused form" in done.stdout.split("beta_lif:")[1]


def test_a_plugin_neuron_trains_and_is_recorded(plugin_run):
    base, run, log = plugin_run
    assert "beta_lif, its PyTorch code (no fused form)" in log
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["plugins"] == [str(base / "my_neurons.py")]
    assert config["spike_mode"] == "beta_lif" and config["neuron_args"] == {"beta": 0.8}
    rows = read_summary(run)
    assert len(rows) == 2 and float(rows[-1]["eval_top1"]) > 20  # above chance (10 %) after two epochs


def test_eval_and_resume_import_the_plugin_again(plugin_run, tmp_path):
    base, run, _ = plugin_run
    done = spikedriven("eval", "--checkpoint", str(run), "--eval-output", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["neuron"]["mode"] == "beta_lif" and metrics["neuron"]["beta"] == 0.8
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    done = spikedriven("train", "--resume", str(resumed), "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in read_summary(resumed)] == ["0", "1", "2"]


def test_a_missing_plugin_is_one_sentence(plugin_run, tmp_path):
    base, run, _ = plugin_run
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    plugin = tmp_path / "my_neurons.py"
    plugin.write_text(readme_plugin())
    config = yaml.safe_load((moved / "config.yaml").read_text())
    done = spikedriven("eval", "--checkpoint", str(moved), "--plugins", str(plugin))  # found elsewhere: still fine
    assert done.returncode == 0, done.stderr
    plugin.unlink()
    gone = spikedriven("eval", "--checkpoint", str(moved / "last.pth.tar"), "--plugins", str(plugin))
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "does not exist" in gone.stderr, gone.stderr
    assert config["plugins"]


def test_a_checkpoint_whose_neuron_is_not_registered(tmp_path):
    from spikedriven import save_checkpoint
    from spikedriven.config import load_config
    from spikedriven.models import build_model

    cfg = load_config(DEMO, {"embed_dim": 16, "num_heads": 2})
    payload = {"state_dict": build_model(cfg).state_dict(), "config": {**cfg.to_dict(), "spike_mode": "beta_lif"}}
    path = save_checkpoint(tmp_path / "last.pth.tar", payload)
    done = spikedriven("eval", "--checkpoint", str(path))
    assert done.returncode == 2 and "unknown spike mode 'beta_lif'" in done.stderr and "--plugins" in done.stderr


def test_a_study_of_a_plugin_neuron(tmp_path):
    (tmp_path / "my_neurons.py").write_text(readme_plugin())
    done = spikedriven("study", "-c", DEMO, "--plugins", str(tmp_path / "my_neurons.py"), "--modes", "beta_lif,if_soft",
                       "--thresholds", "1.0", "--embed-dim", "16", "--num-heads", "2", "--epochs", "1", "--warmup-epochs", "0",
                       "--study-dir", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "s" / "results.md").read_text()
    assert "| LIF, decay factor beta, hard reset to 0 | 1 |" in table and "| IF, soft reset | 1 |" in table
