"""Event-camera data: our readers and frames against SpikingJelly 0.0.0.0.14 on the same generated
files (in the raw formats the archives hold), the CIFAR10-DVS split, the DVS configs through the
command line, the DVS attention, TET, and bad input."""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.data import build_datasets
from spikedriven.data.cifar10_dvs import split_per_class
from spikedriven.data.events import frames_by_number, read_aedat2, read_aedat3
from spikedriven.engine.loop import TETLoss
from spikedriven.models import build_model
from spikedriven.testing import write_fake_dataset

from helpers import read_summary

ROOT = Path(__file__).resolve().parents[1]
DVS_CONF = str(ROOT / "conf/cifar10-dvs/2_256_200E_t10_TET.yml")
GESTURE_CONF = str(ROOT / "conf/gesture/2_256_200E_t10.yml")
SMALL = ["--embed-dim", "16", "--num-heads", "2", "--time-steps", "4", "--img-size", "32", "--epochs", "2", "--warmup-epochs",
         "0", "--cooldown-epochs", "0", "--batch-size", "8", "--val-batch-size", "16", "--workers", "0", "--amp", "none",
         "--device", "cpu", "--log-interval", "50"]


@pytest.fixture(scope="module")
def cifar10_dvs(tmp_path_factory):
    return write_fake_dataset("cifar10-dvs", tmp_path_factory.mktemp("c10dvs") / "cifar10-dvs", n_per_class=10)


@pytest.fixture(scope="module")
def gesture(tmp_path_factory):
    return write_fake_dataset("dvs128-gesture", tmp_path_factory.mktemp("gesture") / "gesture")


def _cfg(conf, root, **overrides):
    values = {"data_dir": str(root), "time_steps": 4, "amp": "none", "workers": 0, **overrides}
    return load_config(conf, values)


@pytest.fixture
def numpy_2_for_spikingjelly(monkeypatch):
    """SpikingJelly 0.0.0.0.14's CIFAR10-DVS reader calls np.fromstring on bytes, which NumPy 2 removed;
    frombuffer reads the same bytes the same way, so the reference runs as its authors meant it."""
    monkeypatch.setattr(np, "fromstring", lambda data, dtype: np.frombuffer(data, dtype=dtype), raising=False)


def _same_events(a: dict, b: dict):
    for key in ("t", "x", "y", "p"):
        assert np.array_equal(np.asarray(a[key]).astype(np.int64), np.asarray(b[key]).astype(np.int64)), key


def test_aedat2_reader_equals_spikingjelly(cifar10_dvs, numpy_2_for_spikingjelly):
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    files = sorted((cifar10_dvs / "extract").glob("*/*.aedat"))
    assert len(files) == 100
    for path in files[::9]:
        _same_events(read_aedat2(path), CIFAR10DVS.load_origin_data(str(path)))


def test_aedat3_reader_equals_spikingjelly(gesture):
    from spikingjelly.datasets import load_aedat_v3

    for path in sorted((gesture / "extract" / "DvsGesture").glob("*.aedat")):
        ours = read_aedat3(path)
        assert ours["t"].size == 11 * 400
        _same_events(ours, load_aedat_v3(str(path)))


@pytest.mark.parametrize("n, frames", [(0, 4), (3, 4), (1000, 1), (1000, 4), (999, 10), (5000, 17)])
def test_frames_by_number_equal_spikingjelly(n, frames):
    from spikingjelly.datasets import integrate_events_by_fixed_frames_number

    rng = np.random.default_rng(n + frames)
    events = {"t": np.sort(rng.integers(0, 10**6, n)), "x": rng.integers(0, 128, n), "y": rng.integers(0, 128, n),
              "p": rng.integers(0, 2, n)}
    ours = frames_by_number(events, frames, 128, 128)
    reference = integrate_events_by_fixed_frames_number(events, "number", frames, 128, 128)
    assert ours.dtype == reference.dtype == np.float64 and np.array_equal(ours, reference)
    assert ours.sum() == n


def test_cifar10_dvs_folder_serves_both_tools(cifar10_dvs, tmp_path, numpy_2_for_spikingjelly):
    """From the same raw files: SpikingJelly's events_np and frames equal ours, and so do its sample order
    and its 90/10 split (``split_to_train_test_set(0.9, dataset, 10)``)."""
    from spikingjelly.datasets import split_to_train_test_set
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    splits = build_datasets(_cfg(DVS_CONF, cifar10_dvs))
    sj_root = tmp_path / "sj"
    shutil.copytree(cifar10_dvs / "extract", sj_root / "extract")
    (sj_root / "events_np").mkdir()  # SpikingJelly's conversion of the raw files, as its dataset runs it
    CIFAR10DVS.create_events_np_files(str(sj_root / "extract"), str(sj_root / "events_np"))
    sj = CIFAR10DVS(str(sj_root), data_type="frame", frames_number=4, split_by="number")
    for ours in sorted((cifar10_dvs / "events_np").glob("*/*.npz")):
        theirs = sj_root / "events_np" / ours.relative_to(cifar10_dvs / "events_np")
        _same_events(np.load(ours), np.load(theirs))
    ours_files = [Path(f).relative_to(cifar10_dvs / "frames_number_4_split_by_number") for f in splits.train.files + splits.eval.files]
    sj_files = [Path(p).relative_to(sj_root / "frames_number_4_split_by_number") for p, _ in sj.samples]
    assert sorted(ours_files) == sorted(sj_files)
    for rel in ours_files:
        ours = np.load(cifar10_dvs / "frames_number_4_split_by_number" / rel)["frames"]
        theirs = np.load(sj_root / "frames_number_4_split_by_number" / rel)["frames"]
        assert np.array_equal(ours, theirs), rel
    sj_train, sj_test = split_to_train_test_set(0.9, sj, 10)
    as_ours = lambda subset: [(str(Path(sj.samples[i][0]).relative_to(sj_root / "frames_number_4_split_by_number")), sj.samples[i][1]) for i in subset.indices]  # noqa: E731
    ours_of = lambda d: [(str(Path(f).relative_to(cifar10_dvs / "frames_number_4_split_by_number")), int(l)) for f, l in zip(d.files, d.labels)]  # noqa: E731
    assert ours_of(splits.train) == as_ours(sj_train) and ours_of(splits.eval) == as_ours(sj_test)
    assert len(splits.train) == 90 and len(splits.eval) == 10
    x, label = splits.train[(0, 0)]
    assert x.shape == (4, 2, 64, 64) and x.dtype == torch.float32  # resized from 128 as the original's Resize(64)


def test_gesture_folder_serves_both_tools(gesture, tmp_path):
    from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

    splits = build_datasets(_cfg(GESTURE_CONF, gesture))
    sj_root = tmp_path / "sj"
    shutil.copytree(gesture / "extract", sj_root / "extract")
    (sj_root / "events_np").mkdir()  # SpikingJelly's conversion of the raw files, as its dataset runs it
    DVS128Gesture.create_events_np_files(str(sj_root / "extract"), str(sj_root / "events_np"))
    for ours in sorted((gesture / "events_np").glob("*/*/*.npz")):
        _same_events(np.load(ours), np.load(sj_root / "events_np" / ours.relative_to(gesture / "events_np")))
    for train in (True, False):
        sj = DVS128Gesture(str(sj_root), train=train, data_type="frame", frames_number=4, split_by="number")
        ours = splits.train if train else splits.eval
        split = "train" if train else "test"
        frames_root = gesture / "frames_number_4_split_by_number" / split
        assert [(Path(f).relative_to(frames_root), int(l)) for f, l in zip(ours.files, ours.labels)] == \
               [(Path(p).relative_to(sj_root / "frames_number_4_split_by_number" / split), t) for p, t in sj.samples]
        for f, (p, _) in zip(ours.files, sj.samples):
            assert np.array_equal(np.load(f)["frames"], np.load(p)["frames"])
    assert len(splits.train) == 22 and len(splits.eval) == 11  # users 1, 2 train; user 3 tests; 11 gestures each


def test_the_cifar10_dvs_split_is_the_first_90_percent_of_each_class_in_order():
    labels = np.array([0] * 7 + [1] * 10 + [2] * 1)
    train, test = split_per_class(labels, 3)
    # ceil(0.9 n): 7 -> 7 (6.3 rounds up), 10 -> 9, 1 -> 1
    assert train.tolist() == list(range(0, 7)) + list(range(7, 16)) + [17]
    assert test.tolist() == [16]


def test_tet_loss_by_hand():
    """(1 - lamb) mean_t CE(out_t, y) + lamb MSE(out, means)."""
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])  # T = 2, B = 1, K = 2
    target = torch.tensor([0])
    ce = torch.nn.functional.cross_entropy
    per_step = (ce(logits[0], target) + ce(logits[1], target)) / 2
    mse = ((2 - 1) ** 2 + (0 - 1) ** 2 + (0 - 1) ** 2 + (1 - 1) ** 2) / 4
    assert TETLoss(ce, 1.0, 0.001)(logits, target).item() == pytest.approx(0.999 * per_step.item() + 0.001 * mse)
    assert TETLoss(ce)(logits, target).item() == pytest.approx(per_step.item())


@pytest.mark.parametrize("conf, fixture", [(DVS_CONF, "cifar10_dvs"), (GESTURE_CONF, "gesture")], ids=["cifar10-dvs", "gesture"])
def test_a_dvs_config_trains_and_evaluates_through_the_command_line(conf, fixture, request, tmp_path):
    root = request.getfixturevalue(fixture)
    run = tmp_path / "run"
    assert main(["train", "-c", conf, "--data-dir", str(root), *SMALL, "--output", str(run)]) == 0
    rows = read_summary(run)
    assert len(rows) == 2
    assert main(["eval", "--checkpoint", str(run)]) == 0
    metrics = json.loads((run / "eval_last" / "metrics.json").read_text())
    assert metrics["samples"] == (10 if fixture == "cifar10_dvs" else 11) and metrics["time_steps"] == 4
    assert metrics["config"]["model_args"]["dvs_mode"] is (fixture == "cifar10_dvs")


def _attention_in_the_original_layout(attn, x):
    """SDSA with dvs_mode as the original computes it: plain layers, heads as [T, B, heads, N, dim/heads], and its
    3x3 max-pools as a MaxPool3d of kernel (1, 3, 3) on k and v per frame, and on k * v and q * kv in that layout."""
    t, b, c, h, w = x.shape
    n, heads = h * w, attn.num_heads
    pool = torch.nn.MaxPool3d((1, 3, 3), 1, (0, 1, 1))

    def fire(neuron, conv, bn, s):
        return neuron(bn(conv(s.flatten(0, 1))).reshape(t, b, c, h, w).contiguous())

    def split(z):
        return z.flatten(3).transpose(-1, -2).reshape(t, b, n, heads, c // heads).permute(0, 1, 3, 2, 4).contiguous()

    s = attn.shortcut_neuron(x)
    q = split(fire(attn.q_neuron, attn.q_conv, attn.q_bn, s))
    k = split(pool(fire(attn.k_neuron, attn.k_conv, attn.k_bn, s)))
    v = split(pool(fire(attn.v_neuron, attn.v_conv, attn.v_bn, s)))
    kv = attn.kv_neuron(pool(k.mul(v)).sum(dim=-2, keepdim=True))
    y = pool(q.mul(kv)).transpose(3, 4).reshape(t, b, c, h, w).contiguous()
    return attn.proj_bn(attn.proj_conv(y.flatten(0, 1))).reshape(t, b, c, h, w).contiguous() + x


@pytest.mark.parametrize("memory", ["full", "lean", "min"])
def test_dvs_mode_trains_as_the_original_at_the_pools_ties(memory, monkeypatch):
    """Spikes tie often in a 3x3 window, and a max-pool's backward gives the gradient to the first maximum in its
    scan order: pooled in another layout (the same forward), the original's gradients would go elsewhere."""
    import copy

    from spikedriven.models.sdt_blocks import SpikeDrivenSelfAttention
    from spikedriven.spike_ops import memory_mode

    torch.manual_seed(0)
    model = build_model(load_config(DVS_CONF, {"img_size": 16, "embed_dim": 32, "num_heads": 4, "time_steps": 3,
                                               "amp": "none", "spike_mode": "if_soft", "v_threshold": 0.5}))
    with torch.no_grad():  # larger weights: more spikes, so more ties in the pools' windows
        for p in model.parameters():
            p.mul_(3.0)
    reference = copy.deepcopy(model)
    frames = torch.poisson(torch.full((2, 3, 2, 16, 16), 0.8), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 7])

    def loss_and_grads(net):
        logits = net(frames)
        loss = torch.nn.functional.cross_entropy(logits.mean(0) if logits.dim() == 3 else logits, labels)
        loss.backward()
        return logits.detach(), loss.detach(), {name: p.grad for name, p in net.named_parameters()}

    with memory_mode(model, memory):
        logits, loss, grads = loss_and_grads(model)
    original_forward = SpikeDrivenSelfAttention.forward
    with monkeypatch.context() as patch:
        patch.setattr(SpikeDrivenSelfAttention, "forward", _attention_in_the_original_layout)
        with memory_mode(reference, "full"):
            logits_ref, loss_ref, grads_ref = loss_and_grads(reference)
    assert SpikeDrivenSelfAttention.forward is original_forward
    assert torch.equal(logits, logits_ref) and torch.equal(loss, loss_ref)
    assert grads["patch_embed.proj_conv.weight"].abs().sum() > 0  # the loss reaches the first layer
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-6, atol=1e-8, msg=name)


@pytest.mark.parametrize("conf", [DVS_CONF, GESTURE_CONF], ids=["cifar10-dvs", "gesture"])
def test_a_checkpoint_in_the_original_layout_loads_strictly(conf, tmp_path):
    from spikedriven import load_checkpoint

    cfg = load_config(conf, {"embed_dim": 32, "num_heads": 4, "time_steps": 3, "amp": "none"})
    model = build_model(cfg).eval()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    for i in range(cfg.model_settings()["depth"]):
        state[f"module.block.{i}.attn.talking_heads.weight"] = torch.randn(8, 8, 1)
    args = argparse.Namespace(spike_mode="lif", dim=32, layer=cfg.model_settings()["depth"], time_steps=3, num_classes=cfg.num_classes, TET=cfg.tet)
    torch.save({"epoch": 199, "state_dict": state, "version": 2, "args": args}, tmp_path / "model_best.pth.tar")
    fresh = build_model(cfg).eval()
    load_checkpoint(fresh, tmp_path / "model_best.pth.tar")
    frames = torch.poisson(torch.full((2, 3, 2, cfg.img_size, cfg.img_size), 0.3))  # [B, T, 2, H, W] event counts
    assert torch.equal(fresh(frames), model(frames))


# ------------------------------------------------------------------ bad input


def _copy(root, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


def _truncate_an_event_file(root):
    path = sorted((root / "extract").glob("*/*.aedat"))[0]
    path.write_bytes(path.read_bytes()[:-3])
    shutil.rmtree(root / "events_np", ignore_errors=True)
    return path.name


def _damage_an_events_npz(root):
    path = sorted((root / "events_np").glob("*/*.npz"))[0]
    path.write_bytes(path.read_bytes()[:40])
    shutil.rmtree(root / "frames_number_4_split_by_number", ignore_errors=True)
    return path.name


def _frames_of_another_t(root):
    path = sorted((root / "frames_number_4_split_by_number").glob("*/*.npz"))[0]
    np.savez_compressed(path, frames=np.zeros((10, 2, 128, 128)))
    return path.name


def _empty_class(root):
    folder = sorted((root / "events_np").iterdir())[3]
    for f in folder.iterdir():
        f.unlink()
    return folder.name


BAD = [
    ("a folder in the wrong layout", lambda r: (shutil.rmtree(r), r.mkdir(), (r / "frames").mkdir()) and "download",
     ["dataset not found"]),
    ("a truncated event file", _truncate_an_event_file, ["is truncated"]),
    ("a damaged events file", _damage_an_events_npz, ["cannot be read", "truncated"]),
    ("frames cached for another T", _frames_of_another_t, ["[10, 2, 128, 128]", "cached for other settings"]),
    ("an empty class folder", _empty_class, ["holds no .npz samples"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_event_data_is_one_sentence_naming_the_file(case, cifar10_dvs, tmp_path, capsys):
    _, damage, words = case
    root = _copy(cifar10_dvs, tmp_path)
    build_datasets(_cfg(DVS_CONF, root))  # converted once, so that each case damages one stage
    named = damage(root)
    code = main(["train", "-c", DVS_CONF, "--data-dir", str(root), *SMALL, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert named in err, err
    for word in words:
        assert word in err, err


def test_image_settings_that_do_not_apply_to_frames_are_refused(cifar10_dvs, capsys):
    assert main(["train", "-c", DVS_CONF, "--data-dir", str(cifar10_dvs), *SMALL, "--aa", "rand-m9-n1"]) == 2
    assert "RandAugment (aa) does not apply" in capsys.readouterr().err


def test_a_neuron_study_on_cifar10_dvs_in_one_command(cifar10_dvs, tmp_path, capsys):
    args = ["study", "-c", DVS_CONF, "--data-dir", str(cifar10_dvs), "--modes", "lif,if_soft", "--thresholds", "1.0",
            *SMALL, "--study-dir", str(tmp_path / "s")]
    assert main(args) == 0
    table = (tmp_path / "s" / "results.md").read_text()
    assert "on cifar10-dvs (T = 4, 2 epochs): sdt, depth 2, width 16" in table
    assert "| sdt, depth 2, width 16 | LIF, hard reset | 1 | 1 |" in table
    assert "| sdt, depth 2, width 16 | IF, soft reset | 1 | 1 |" in table
