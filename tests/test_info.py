"""`spikedriven info`: the report, on a CPU-only machine, of versions, devices, datasets and a config's model."""

import os

import pytest
import torch

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.data import DATASETS
from spikedriven.runtime import cpu_ids
from spikedriven.models import build_model
from spikedriven.neurons import fused

DEMO = "conf/digits/demo.yml"  # a small model, so every report's forward takes well under a second
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config path is relative to the repository


def _info(capsys, *args) -> tuple[int, str, str]:
    code = main(["info", "-c", DEMO, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _state(out: str, dataset: str) -> str:
    line = next(line for line in out.splitlines() if line.strip().startswith(dataset + " "))
    return line.strip()[len(dataset):].strip()


def test_versions_and_cpu_cores(capsys, tmp_path):
    code, out, _ = _info(capsys, "--data-dir", str(tmp_path))
    assert code == 0
    assert torch.__version__.split("+")[0] in out
    assert f"cpu cores     {len(cpu_ids())} usable" in out
    assert f"torch threads {torch.get_num_threads()}" in out


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="the fused kernels may run here")
def test_fused_kernels_say_why_not_on_cpu(capsys, tmp_path, monkeypatch):
    _, out, _ = _info(capsys, "--data-dir", str(tmp_path))
    line = next(line for line in out.splitlines() if "fused kernels" in line)
    assert "not usable" in line and ("no CUDA device" in line or "triton" in line)
    # without Triton the reason is Triton, whatever the device
    monkeypatch.setattr(fused, "_triton", None)
    _, out, _ = _info(capsys, "--data-dir", str(tmp_path))
    assert "fused kernels not usable: triton is" in out


def test_fake_cifar10_is_present_and_fails_checksums(capsys, tmp_path):
    DATASETS["torch/cifar10"].write_fake(tmp_path)
    _, out, _ = _info(capsys, "--data-dir", str(tmp_path))
    assert _state(out, "torch/cifar10") == "present"
    assert _state(out, "torch/cifar100") == "missing"
    assert _state(out, "imagenet") == "missing"
    # generated files cannot carry the official sums
    code, out, _ = _info(capsys, "--data-dir", str(tmp_path), "--checksums")
    assert code == 0
    assert _state(out, "torch/cifar10").startswith("present, checksum mismatch: data_batch_1")
    assert _state(out, "torch/cifar100") == "missing"


def test_every_registered_dataset_is_listed_once(capsys, tmp_path):
    _, out, _ = _info(capsys, "--data-dir", str(tmp_path / "nothing"))
    assert "does not exist" in out
    for name in {d.name for d in DATASETS.values()}:
        assert sum(line.strip().startswith(name + " ") for line in out.splitlines()) == 1


def test_parameter_count_is_the_built_models(capsys, tmp_path):
    _, out, _ = _info(capsys, "--data-dir", str(tmp_path))
    expected = sum(p.numel() for p in build_model(load_config(DEMO)).parameters())
    assert f"parameters    {expected:,}" in out
    assert "dense MACs" in out and "M per image" in out


def test_bad_data_dir_is_one_line_and_exit_2(capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, out, err = _info(capsys, "--data-dir", str(not_a_folder))
    assert code == 2
    assert err.strip() == f"error: the data dir {not_a_folder} is not a folder"
    assert out == ""


def test_bad_config_flag_exits_2(capsys):
    code, _, err = _info(capsys, "--time-steps", "zero")
    assert code == 2 and len(err.strip().splitlines()) == 1
