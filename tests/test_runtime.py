"""Every "auto" of a run is decided in one place (spikedriven.runtime) and logged in one line."""

from pathlib import Path

import torch

from spikedriven.config import load_config
from spikedriven.runtime import (MAX_AUTO_WORKERS, Runtime, backward_memory_for, channels_last_for, compile_mode_for,
                                 fused_optimizer_for, workers_for)

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
    assert line.endswith("fused neuron kernels not usable here | adamw unfused (auto) | amp none")
    given = load_config(DEMO, {"device": "cpu", "backward_memory": "lean", "channels_last": "true", "workers": "0"})
    line = Runtime.resolve(given, torch.device("cpu")).describe(given)
    assert "backward memory lean |" in line and "channels-last on |" in line and "| 0 loader workers |" in line


def test_a_run_logs_its_runtime_once_and_uses_it(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run), "--backward-memory", "lean"], capsys)
    assert code == 0, err
    lines = [line for line in (run / "log.txt").read_text().splitlines() if "runtime: " in line]
    assert len(lines) == 1 and "runtime: cpu | backward memory lean |" in lines[0] and "0 loader workers |" in lines[0]


def test_fused_optimizer_auto_is_on_for_cuda_with_adam_or_adamw_only():
    cfg = load_config(STUDY_CONF)
    assert cfg.fused_optimizer is None and cfg.opt == "adamw"
    assert fused_optimizer_for(cfg.fused_optimizer, cfg.opt, "cuda")
    assert not fused_optimizer_for(cfg.fused_optimizer, cfg.opt, "cpu")
    assert fused_optimizer_for(None, "adam", "cuda") and not fused_optimizer_for(None, "lamb", "cuda")
    assert fused_optimizer_for(True, "adamw", "cpu") and not fused_optimizer_for(False, "adamw", "cuda")
    given = load_config(DEMO, {"device": "cpu", "fused_optimizer": "true"})
    assert "| adamw fused |" in Runtime.resolve(given, torch.device("cpu")).describe(given)


def test_fused_optimizer_true_with_an_optimizer_without_a_fused_kernel_is_one_sentence(capsys):
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--opt", "lamb", "--fused-optimizer", "true"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: fused_optimizer: true needs opt adam or adamw (torch's fused kernels); opt lamb has none, so leave "
        "fused_optimizer at auto or false")


def test_the_fused_optimizer_step_is_the_unfused_step_up_to_rounding():
    """What ``fused_optimizer`` changes: the same AdamW update (weight decay groups, schedule) in one kernel."""
    from spikedriven.engine.recipe import build_optimizer_and_scheduler
    from spikedriven.models import build_model

    cfg = load_config(DEMO, {"device": "cpu"})
    torch.manual_seed(0)
    models = [build_model(cfg) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer_and_scheduler(cfg, m, fused=fused)[0] for m, fused in zip(models, (False, True))]
    assert [o.defaults.get("fused") for o in optimizers] == [None, True]
    assert [[g["weight_decay"] for g in o.param_groups] for o in optimizers] == [[0.0, cfg.weight_decay]] * 2
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for model, optimizer in zip(models, optimizers):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


def test_a_run_with_the_fused_optimizer_trains_and_resumes_with_the_other(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run), "--fused-optimizer", "true"], capsys)
    assert code == 0, err
    assert "| adamw fused |" in (run / "log.txt").read_text()
    ckpt = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
    assert all(g["fused"] for g in ckpt["optimizer"]["param_groups"])
    # how a run is carried out, not what it computes: a resume may switch it, and its state carries over
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2", "--fused-optimizer", "false"], capsys)
    assert code == 0, err
    assert "| adamw unfused |" in (run / "log.txt").read_text()


def test_the_model_of_a_run_keeps_for_backward_what_its_runtime_decided():
    from spikedriven.engine.trainer import place_model
    from spikedriven.spike_ops import saved_tensor_bytes

    saved = {}
    for memory in ("auto", "lean"):  # auto is full on CPU
        cfg = load_config(DEMO, {"device": "cpu", "backward_memory": memory, "embed_dim": "16", "num_heads": "2"})
        torch.manual_seed(0)
        model = place_model(cfg, Runtime.resolve(cfg, torch.device("cpu")))
        layers = [m for m in model.modules() if hasattr(m, "backward_memory")]
        assert layers and {m.backward_memory for m in layers} == {"full" if memory == "auto" else "lean"}
        images = torch.randn(4, cfg.in_chans, cfg.img_size, cfg.img_size)
        saved[memory] = saved_tensor_bytes(lambda: model(images))
    assert saved["lean"] < 0.7 * saved["auto"]
