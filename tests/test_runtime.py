"""Every "auto" of a run is decided in one place (spikedriven.runtime) and logged in one line."""

from pathlib import Path

import torch

from spikedriven.config import load_config
from spikedriven.runtime import (MAX_AUTO_WORKERS, Runtime, backward_memory_for, channels_last_for, compile_mode_for,
                                 workers_for)

from helpers import DEMO, SMALL, run_cli

STUDY_CONF = Path(__file__).resolve().parents[1] / "conf/cifar10/2_256_300E_t4.yml"


def _compile(cfg, device_type, distributed=False):
    return compile_mode_for(cfg.compile, cfg.compile_mode, device_type, distributed, cfg.backward_memory)


def test_compile_auto_compiles_single_process_cuda_runs_only():
    cfg = load_config(STUDY_CONF)
    assert cfg.compile is None  # auto
    assert _compile(cfg, "cuda") == "reduce-overhead"
    assert _compile(cfg, "cuda", distributed=True) is None
    assert _compile(cfg, "cpu") is None
    forced = load_config(STUDY_CONF, {"compile": "true", "compile_mode": "default"})
    assert _compile(forced, "cpu", distributed=True) == "default"
    assert _compile(load_config(STUDY_CONF, {"compile": False}), "cuda") is None
    assert load_config(STUDY_CONF, {"compile": "auto"}).compile is None
    # min's recomputation is eager: auto leaves such a run uncompiled, an explicit true still compiles
    assert _compile(load_config(STUDY_CONF, {"backward_memory": "min"}), "cuda") is None
    assert _compile(load_config(STUDY_CONF, {"backward_memory": "min", "compile": True}), "cuda") == "reduce-overhead"


def test_channels_last_auto_is_on_for_cuda_only():
    cfg = load_config(STUDY_CONF)
    assert cfg.channels_last is None
    assert channels_last_for(cfg.channels_last, "cuda") and not channels_last_for(cfg.channels_last, "cpu")
    assert channels_last_for(load_config(STUDY_CONF, {"channels_last": "true"}).channels_last, "cpu")


def test_backward_memory_auto_is_lean_on_accelerators_and_full_on_cpu():
    assert backward_memory_for("auto", "cuda") == "lean" and backward_memory_for("auto", "cpu") == "full"
    assert backward_memory_for("min", "cpu") == "min" and backward_memory_for("full", "cuda") == "full"


def test_workers_auto_fills_the_cpu_share_on_a_gpu_and_takes_one_on_cpu():
    auto = load_config(STUDY_CONF).workers
    assert auto is None  # the study's configs say auto
    assert workers_for(auto, "cuda", cpus=16, local_processes=1) == 15  # one core stays with the training loop
    assert workers_for(auto, "cuda", cpus=64, local_processes=4) == 15  # torchrun: each process its share
    assert workers_for(auto, "cuda", cpus=1, local_processes=1) == 1
    assert workers_for(auto, "cuda", cpus=256, local_processes=1) == MAX_AUTO_WORKERS
    assert workers_for(auto, "cpu", cpus=2, local_processes=1) == 1
    assert workers_for(auto, "cpu", cpus=1, local_processes=1) == 0
    assert workers_for(3, "cuda", cpus=16, local_processes=1) == workers_for(3, "cpu", cpus=1) == 3
    assert load_config(None, {"workers": "AUTO"}).workers is None


def test_a_cpu_run_resolves_its_autos_and_says_so_in_one_line():
    cfg = load_config(DEMO, {"device": "cpu"})
    runtime = Runtime.resolve(cfg, torch.device("cpu"))
    assert (runtime.backward_memory, runtime.channels_last, runtime.compile_mode, runtime.cuda_graphs,
            runtime.fused_kernels) == ("full", False, None, False, False)
    line = runtime.describe(cfg)
    assert line.startswith("runtime: cpu | backward memory full (auto) | channels-last off (auto) | eager (auto) | ")
    assert line.endswith("fused neuron kernels not usable here | amp none")
    given = load_config(DEMO, {"device": "cpu", "backward_memory": "lean", "channels_last": "true", "workers": "0"})
    line = Runtime.resolve(given, torch.device("cpu")).describe(given)
    assert "backward memory lean |" in line and "channels-last on |" in line and "| 0 loader workers |" in line


def test_a_run_logs_its_runtime_once_and_uses_it(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run), "--backward-memory", "lean"], capsys)
    assert code == 0, err
    lines = [line for line in (run / "log.txt").read_text().splitlines() if "runtime: " in line]
    assert len(lines) == 1 and "runtime: cpu | backward memory lean |" in lines[0] and "0 loader workers |" in lines[0]
