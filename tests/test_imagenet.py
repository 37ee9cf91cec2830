"""ImageNet: the five SDT configs' sizes against the original's counts, an ImageNet-config model on a tiny
ImageFolder of real JPEGs through the command line (evaluated at another size too), the original's
checkpoint layout, and bad folders and files."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.models import build_model
from spikedriven.testing import write_fake_dataset

from helpers import read_summary

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf/imagenet/8_384_300E_t4.yml")
TINY = ["--embed-dim", "32", "--depth", "1", "--num-heads", "4", "--time-steps", "2", "--img-size", "32", "--num-classes", "4",
        "--epochs", "2", "--warmup-epochs", "0", "--cooldown-epochs", "0", "--batch-size", "4", "--val-batch-size", "8",
        "--workers", "0", "--amp", "none", "--device", "cpu", "--log-interval", "50"]

# the original's published parameter counts, which include its dead talking-heads weights (64 per block)
PUBLISHED = {"8_384": 16_816_536, "6_512": 23_373_736, "8_512": 29_689_896, "10_512": 36_006_056, "8_768": 66_339_144}


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return write_fake_dataset("imagenet", tmp_path_factory.mktemp("imagenet") / "imagenet")


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_the_five_configs_build_the_original_models(name):
    cfg = load_config(ROOT / f"conf/imagenet/{name}_300E_t4.yml", {"amp": "none"})
    assert cfg.model_settings()["pooling_stat"] == "1111" and cfg.opt == "lamb" and cfg.time_steps == 4
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) + 64 * cfg.model_settings()["depth"] == PUBLISHED[name]


def test_model_sizes_benchmark_prints_the_table(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/model_sizes.py"), CONF, "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| 8_384_300E_t4.yml | 8-384 | 16,816,024 | 16,816,536 | 16,816,536 |" in done.stdout
    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["macs_per_step"] > 4e9


def test_an_imagenet_config_trains_and_evaluates_through_the_command_line(imagenet, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "-c", CONF, "--data-dir", str(imagenet), *TINY, "--output", str(run)]) == 0
    rows = read_summary(run)
    assert len(rows) == 2
    cfg = load_config(run / "config.yaml")
    assert cfg.aug_repeats == 3 and cfg.cutmix == 1.0 and cfg.opt == "lamb"
    assert main(["eval", "--checkpoint", str(run)]) == 0
    metrics = json.loads((run / "eval_last" / "metrics.json").read_text())
    assert metrics["samples"] == 8 and metrics["top1"] == pytest.approx(float(rows[-1]["eval_top1"]))
    # at another size (the original's --large-valid is 288 at img_size 224): a folder of its own
    assert main(["eval", "--checkpoint", str(run), "--eval-img-size", "48"]) == 0
    larger = json.loads((run / "eval_last-48px" / "metrics.json").read_text())
    assert larger["samples"] == 8 and larger["config"]["eval_img_size"] == 48
    assert larger["totals"]["dense_macs_per_step"] > metrics["totals"]["dense_macs_per_step"]


def test_large_valid_evaluates_at_288(imagenet, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "-c", CONF, "--data-dir", str(imagenet), *TINY, "--epochs", "1", "--output", str(run)]) == 0
    done = subprocess.run([sys.executable, str(ROOT / "firing_num.py"), "--resume", str(run / "last.pth.tar"),
                           "--no-resume-opt", "--large-valid"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "eval_last-288px" / "metrics.json").read_text())["config"]["eval_img_size"] == 288


def test_the_original_checkpoint_layout_loads_strictly(tmp_path):
    from spikedriven import load_checkpoint

    cfg = load_config(CONF, {"embed_dim": 64, "depth": 2, "num_classes": 5, "img_size": 64, "amp": "none"})
    model = build_model(cfg).eval()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    for i in range(cfg.model_settings()["depth"]):
        state[f"module.block.{i}.attn.talking_heads.weight"] = torch.randn(8, 8, 1)
    args = argparse.Namespace(spike_mode="lif", dim=64, layer=2, time_steps=4, num_classes=5, TET=False, pooling_stat="1111")
    torch.save({"epoch": 309, "state_dict": state, "version": 2, "args": args, "metric": 72.0}, tmp_path / "m.pth.tar")
    fresh = build_model(cfg).eval()
    load_checkpoint(fresh, tmp_path / "m.pth.tar")
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(fresh(images), model(images))
    assert fresh(torch.randn(1, 3, 96, 96)).shape == (1, 5)  # and at a larger size


def _corrupt_one_jpeg(root):
    path = sorted((root / "train").glob("*/*.JPEG"))[5]
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    return path


def test_a_corrupt_jpeg_mid_epoch_is_named_and_the_run_saved(imagenet, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(imagenet, data)
    bad = _corrupt_one_jpeg(data)
    run = tmp_path / "run"
    code = main(["train", "-c", CONF, "--data-dir", str(data), *TINY, "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    line = [l for l in err.splitlines() if l.startswith("error: ")][-1]
    assert f"image {bad} cannot be decoded" in line and "resume with: spikedriven train --resume" in line, err
    assert (run / "last.pth.tar").is_file()
    shutil.copy(sorted((imagenet / "train" / bad.parent.name).glob("*.JPEG"))[0], bad)  # fixed
    assert main(["train", "--resume", str(run)]) == 0
    assert len(read_summary(run)) == 2


def _empty_class(root):
    folder = root / "train" / "n00000002"
    for f in folder.iterdir():
        f.unlink()
    return str(folder)


def _no_train(root):
    shutil.rmtree(root / "train")
    return str(root / "train")


def _unknown_val_class(root):
    (root / "val" / "n99999999").mkdir()
    shutil.copy(sorted((root / "val").glob("*/*.JPEG"))[0], root / "val" / "n99999999" / "x.JPEG")
    return "n99999999"


BAD = [
    ("an empty class folder", _empty_class, ["holds no images"]),
    ("no train folder", _no_train, ["dataset not found", "train/<class>/*.JPEG"]),
    ("a val class that train lacks", _unknown_val_class, ["class folders that train/ lacks"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_image_folders_are_one_sentence(case, imagenet, tmp_path, capsys):
    _, damage, words = case
    data = tmp_path / "data"
    shutil.copytree(imagenet, data)
    named = damage(data)
    code = main(["train", "-c", CONF, "--data-dir", str(data), *TINY, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err
    for word in words:
        assert word in err, err
