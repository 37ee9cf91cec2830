"""`spikedriven export`: a run's model as model.safetensors + timm config.json + card, loaded back through timm."""

import csv
import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
import timm
import torch

import spikedriven  # noqa: F401  (registers sdt with timm)
from spikedriven.engine import checkpoint as ckpt_io
from spikedriven.cli import main
from spikedriven.config import recorded_config
from spikedriven.errors import ConfigError
from spikedriven.export import export_run
from spikedriven.models import build_model
from spikedriven.testing import write_fake_cifar

from helpers import tiny_model_kwargs
from helpers import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf/cifar10/2_256_300E_t4.yml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch if_soft run; a low threshold so that its neurons fire and the outputs depend on the weights."""
    base = tmp_path_factory.mktemp("export")
    data = write_fake_cifar(base / "data", n_train=40, n_test=13, seed=5)
    folder = base / "run"
    assert main(["train", "-c", CONF, "--data-dir", str(data), *TINY_RUN, "--epochs", "1",
                 "--spike-mode", "if_soft", "--v-threshold", "0.3", "--output", str(folder)]) == 0
    # One epoch at warm-up's learning rate leaves weights near their tiny init: no spike reaches the head and
    # every input gives the same logits, which would let a wrong load pass. Larger weights make them differ.
    ckpt = ckpt_io.read_checkpoint(folder / "last.pth.tar")
    g = torch.Generator().manual_seed(1)
    ckpt["state_dict"] = {k: torch.randn(v.shape, generator=g) * 0.5 if v.is_floating_point() and "running" not in k else v
                          for k, v in ckpt["state_dict"].items()}
    ckpt_io.save_checkpoint(folder / "last.pth.tar", ckpt)
    return folder


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "sdt-export"
    written = export_run(run, out)
    assert [p.name for p in written] == ["model.safetensors", "config.json", "README.md"]
    return out


def checkpoint_model(run):
    ckpt = ckpt_io.read_checkpoint(run / "last.pth.tar")
    model = build_model(recorded_config(ckpt["config"], "checkpoint config"))
    ckpt_io.load_into(model, ckpt, run / "last.pth.tar")
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_timm_round_trip_gives_the_checkpoints_outputs(run, exported):
    cfg = json.loads((exported / "config.json").read_text())
    loaded = timm.create_model(cfg["architecture"], pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(exported / "model.safetensors")), **cfg["model_args"])
    x = torch.randn(4, 3, 32, 32)
    want = outputs(checkpoint_model(run), x)
    assert any(not torch.equal(want[0], row) for row in want[1:])  # input-dependent: equality tests the weights
    assert torch.equal(outputs(loaded, x), want)


def test_local_dir_loads_the_export(run, exported):
    loaded = timm.create_model(f"local-dir:{exported}", pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(loaded, x), outputs(checkpoint_model(run), x))
    assert loaded.pretrained_cfg["num_classes"] == 10 and loaded.time_steps == 2


def test_config_json_is_timm_hub_style(exported):
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architecture"] == "sdt" and cfg["num_classes"] == 10
    args = cfg["model_args"]
    assert args["time_steps"] == 2 and args["embed_dim"] == 32 and args["depth"] == 1
    assert args["neuron"]["mode"] == "if_soft" and args["neuron"]["v_threshold"] == 0.3
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 32] and pre["num_classes"] == 10
    assert {"mean", "std", "crop_pct", "interpolation"} <= set(pre)


def test_card_names_the_results(run, exported):
    card = (exported / "README.md").read_text()
    results = json.loads((run / "results.json").read_text())
    assert "torch/cifar10" in card and "if_soft" in card and "time steps T: 2" in card
    assert f"final top-1: {results['final_top1']:.2f}%" in card
    assert f"best top-1: {results['best_top1']:.2f}%" in card
    assert "local-dir:" in card


def test_card_says_when_results_are_missing(run, tmp_path):
    bare = tmp_path / "run"
    bare.mkdir()
    shutil.copy(run / "last.pth.tar", bare / "last.pth.tar")
    export_run(bare, tmp_path / "out")
    assert "Missing: the run folder holds neither results.json nor summary.csv" in (tmp_path / "out" / "README.md").read_text()


def test_card_reads_summary_csv_when_the_run_has_no_results_json(run, tmp_path):
    partial = tmp_path / "run"
    partial.mkdir()
    for name in ("last.pth.tar", "summary.csv", "config.yaml"):
        shutil.copy(run / name, partial / name)
    with open(partial / "summary.csv", newline="") as f:
        top1 = [float(r["eval_top1"]) for r in csv.DictReader(f)]
    export_run(partial, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "From summary.csv (the run has no results.json" in card
    assert f"final top-1: {top1[-1]:.2f}% (epoch {len(top1) - 1})" in card
    assert f"best top-1: {max(top1):.2f}% (epoch {top1.index(max(top1))})" in card


def test_an_other_export_is_kept_unless_overwrite(run, exported, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    export_run(run, out)  # the same export again: nothing to protect
    (out / "config.json").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"already holds a different export; give another --output or add --overwrite$"):
        export_run(run, out)
    export_run(run, out, overwrite=True)
    assert (out / "config.json").read_text() == (exported / "config.json").read_text()


def test_no_timm_warning_at_model_creation(caplog):
    with caplog.at_level(logging.DEBUG, logger="timm"), warnings.catch_warnings():
        warnings.simplefilter("error")
        timm.create_model("sdt", **tiny_model_kwargs())
    assert not [r for r in caplog.records if "No pretrained configuration" in r.getMessage()]


def test_pretrained_without_weights_is_one_sentence():
    with pytest.raises(ConfigError, match="^no pretrained sdt weights are published"):
        timm.create_model("sdt", pretrained=True, **tiny_model_kwargs())


def test_file_overlay_takes_its_sizes_from_the_model(tmp_path):
    # a 100-class, 1-channel model from a bare file: timm would otherwise drop the head against its default 10 classes
    from safetensors.torch import save_file

    kwargs = tiny_model_kwargs(num_classes=100, in_chans=1)
    source = timm.create_model("sdt", **kwargs).eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "m.safetensors"))
    loaded = timm.create_model("sdt", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "m.safetensors")), **kwargs)
    x = torch.randn(2, 1, 16, 16) * 2
    assert torch.equal(outputs(loaded, x), outputs(source, x))


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing", lambda tmp: tmp])
def test_cli_refuses_bad_input_with_one_sentence(make, tmp_path, capsys):
    target = make(tmp_path)
    assert main(["export", str(target), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and not err.endswith(".")
    assert str(target) in err


def test_cli_prints_files_and_load_lines(run, tmp_path, capsys):
    assert main(["export", str(run), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "config.json" in out and "README.md" in out
    assert "timm.create_model(cfg['architecture'], pretrained=True" in out and "local-dir:" in out
