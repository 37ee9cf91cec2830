"""Every figure the toolkit draws reads at a glance: it says what it shows, and no text is clipped or covered.

Each figure is built from small synthetic inputs with the long names real runs have (layer names of a deep
model, run folders named by all their settings), then drawn and checked by ``helpers_figures``."""

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, TINY_RUN, read_summary
from helpers_figures import assert_text_fits, text_problems

from spikedriven.analysis.compare import _format_compare, compare, compare_figure
from spikedriven.analysis.membrane import HIST_BINS, _EDGES, membrane_figure
from spikedriven.analysis.reports import (energy_figure, evaluation_caption, firing_rates_figure,
                                          learned_settings_figure, write_evaluation, write_metrics)
from spikedriven.cli.main import main
from spikedriven.engine.run_folder import SUMMARY_FIELDS, run_curves_figure, write_run_curves
from spikedriven.study.figures import curves_figure, firing_figure, tradeoff_figure
from spikedriven.testing import write_fake_cifar

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"blocks.{b}.{part}" for b in range(4) for part in
          ("attn.q_conv.lif_node", "attn.k_conv.lif_node", "attn.attn_lif_node", "mlp.fc1_lif.multistep")]
# the part that tells two runs apart, as long as a study's run names get
RUN = "cifar10-sdt-{mode}-uth1.0-embed256-depth2-t4-seed42-warmup20-cooldown10"


def fake_result(layers=LAYERS, steps=4, top1=91.25, mode="lif", learned=False) -> dict:
    """An evaluation's result as ``analyze`` returns it, with only what the reports read."""
    rates = {n: {"per_step": [0.1 + 0.01 * (i % 7) + 0.002 * t for t in range(steps)], "mean": 0.12}
             for i, n in enumerate(layers)}
    rows = [dict(name=n.replace("lif_node", "conv"), type="Conv2d", kind="AC" if i else "MAC", time_steps=steps,
                 macs_per_step=1000 * (i + 1), input_firing_rate=None if i == 0 else 0.1, sops=1e6 * (i + 1),
                 energy_j=1e-6 * (i + 1)) for i, n in enumerate(layers)]
    total = sum(r["energy_j"] for r in rows)
    result = dict(samples=1000, time_steps=steps, num_classes=10, top1=top1, top5=99.0, top5_k=5, loss=0.3,
                  mean_firing_rate=0.12, neuron={"mode": mode, "v_threshold": 1.0}, attn_neuron=None,
                  learned_neuron_settings={n: {"tau": 2.0 + 0.1 * i} for i, n in enumerate(layers)} if learned else {},
                  firing_rates=rates, layers=rows,
                  totals=dict(dense_macs_per_step=1e5, mac_ops=1e5, sops=2e7, energy_snn_j=total,
                              energy_ann_j=4 * total, snn_to_ann_energy_ratio=0.25),
                  energy_constants=dict(e_mac_j=4.6e-12, e_ac_j=0.9e-12), convention="per image",
                  energy={"sdt": {"total_j": total, "components": [], "by_kind_j": {}, "convention": "per image"}},
                  split="test", checkpoint_epoch=299)
    return result


CONFIG = {"model": "sdt", "dataset": "torch/cifar10", "spike_mode": "lif", "v_threshold": 1.0}


def run_folder(root: Path, mode: str) -> Path:
    return root / "output" / "train" / "a-long-study-folder-name-2024-06-01" / "runs" / RUN.format(mode=mode)


# ---------------------------------------------------------------- evaluations


def test_the_eval_plots_name_run_checkpoint_neuron_and_energy_model_and_fit(tmp_path):
    result = fake_result(learned=True)
    about = evaluation_caption(result, CONFIG, run_folder(tmp_path, "lif") / "best.pth.tar")
    assert RUN.format(mode="lif") in about and "best.pth.tar (epoch 299)" in about and "neuron lif u_th 1" in about
    for figure in (firing_rates_figure(result, about), energy_figure(result, about),
                   learned_settings_figure(result, about)):
        assert_text_fits(figure)
    energy = energy_figure(result, about).axes[0].get_title().replace("\n", " ")
    assert "energy model sdt" in energy and "4.6 pJ per MAC" in energy


def test_the_eval_plots_of_a_loaded_metrics_file_say_the_same(tmp_path):
    folder = run_folder(tmp_path, "lif") / "eval_last"
    write_evaluation(folder, fake_result(), CONFIG, folder.parent / "last.pth.tar")
    metrics = json.loads((folder / "metrics.json").read_text())
    title = firing_rates_figure(metrics).axes[0].get_title().replace("\n", " ")
    assert "checkpoint last.pth.tar (epoch 299)" in title and "sdt" in title and "cifar10 test" in title
    assert (folder / "firing_rates.png").read_bytes()[:8] == PNG


def test_the_membrane_figure_names_each_layer_s_neuron_and_fits():
    counts = [[(b * (t + 1)) % 9 for b in range(HIST_BINS)] for t in range(4)]
    hist = {n: dict(edges=list(_EDGES), counts=counts, below=[1] * 4, above=[2] * 4) for n in LAYERS[:6]}
    about = "run " + RUN.format(mode="lif") + " | checkpoint last.pth.tar (epoch 299) | sdt | neuron lif u_th 1"
    fig = membrane_figure(hist, about, {n: "lif" for n in hist})
    assert_text_fits(fig)
    assert "checkpoint last.pth.tar" in fig.get_suptitle().replace("\n", " ")
    assert_text_fits(membrane_figure({LAYERS[0]: hist[LAYERS[0]]}, about))  # one narrow panel


# ---------------------------------------------------------------- compare


def _evaluations(tmp_path, modes=("lif", "if_soft"), views=("last",)):
    folders = []
    for i, mode in enumerate(modes):
        for view in views:
            folder = run_folder(tmp_path, mode) / f"eval_{view}"
            config = {**CONFIG, "spike_mode": mode}
            # the metrics alone: compare reads nothing else
            write_metrics(folder / "metrics.json", fake_result(top1=99.95 - i, mode=mode), config,
                          folder.parent / f"{view}.pth.tar")
            folders.append(folder)
    return folders


def test_compare_labels_runs_briefly_and_shows_the_checkpoint_on_its_own(tmp_path):
    text, rows = compare(_evaluations(tmp_path, views=("best", "last")), out_dir=tmp_path / "cmp")
    assert [(r["label"], r["checkpoint"]) for r in rows] == [
        (RUN.format(mode="lif"), "best"), (RUN.format(mode="lif"), "last"),
        (RUN.format(mode="if_soft"), "best"), (RUN.format(mode="if_soft"), "last")]
    header, *body = text.splitlines()
    assert header.split()[:3] == ["run", "checkpoint", "epoch"]
    assert body[0].split()[:3] == [RUN.format(mode="lif"), "best", "299"]
    assert all("eval_" not in line.split()[0] for line in body)
    fig = compare_figure(rows)
    assert_text_fits(fig)
    ticks = [t.get_text().replace("\n", "") for t in fig.axes[0].get_xticklabels()]
    assert ticks[0] == RUN.format(mode="lif") + " (best)"
    assert "checkpoints: best, last" in fig.get_suptitle().replace("\n", " ")
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("runs", [2, 12])
def test_the_compare_figure_fits_few_and_many_runs(tmp_path, runs):
    _, rows = compare(_evaluations(tmp_path, modes=[f"lif{i}" for i in range(runs)]))
    fig = compare_figure(rows)
    assert_text_fits(fig)
    assert "neurons per run" in fig.get_suptitle() or runs == 1
    assert _format_compare(rows).splitlines()[1].split()[1] == "last"


# ---------------------------------------------------------------- a study


class FakeStudy:
    """What the study's figures read of a Study: its folder, settings with their runs, and the runs' files."""

    def __init__(self, folder: Path, settings):
        self.folder, self.groups = folder, ["sdt"]
        self.configs = defaultdict(lambda: None)  # read only by the size text, replaced in the test
        self._settings = {s: [f"{s[1]}-{s[2]}-seed{seed}" for seed in (1, 2)] for s in settings}
        for runs in self._settings.values():
            for run in runs:
                self.eval_dir(run).mkdir(parents=True)
                write_summary(self.run_dir(run), epochs=6)
                metrics = {"firing_rates": {n: {"mean": 0.1 + 0.01 * i} for i, n in enumerate(LAYERS)}}
                (self.eval_dir(run) / "metrics.json").write_text(json.dumps(metrics))

    def done_by_setting(self):
        return self._settings

    def run_dir(self, run):
        return self.folder / "runs" / run

    def eval_dir(self, run):
        return self.run_dir(run) / "eval_last"


def test_the_study_figures_fit_and_name_the_study(tmp_path, monkeypatch):
    from spikedriven.study import figures

    # the size as the study spells it, without building the runs' configs
    monkeypatch.setattr(figures, "group_text", lambda cfg, run: "sdt, depth 2, width 256, T 4", raising=False)
    settings = [("sdt", "lif", 1.0), ("sdt", "if_soft", 1.0), ("sdt", "plif", 0.5)]
    study = FakeStudy(tmp_path / "study-cifar10-neurons-and-thresholds-2024", settings)
    for fig in (curves_figure(study), firing_figure(study)):
        assert_text_fits(fig)
        assert study.folder.name in fig.axes[0].get_title().replace("\n", "")
    rows = [dict(model="sdt", mode=mode, v_threshold=thr, size="embed 256, depth 2, T 4", final_top1_mean=90.0 + i,
                 final_top1_std=0.2, **{f"energy_{m}_uj_{s}": 1.0 + i for m in ("sdt", "neuron") for s in ("mean", "std")})
            for i, (_, mode, thr) in enumerate(settings)]
    for models in (["sdt"], ["sdt", "neuron"]):
        fig = tradeoff_figure(rows, models, study.folder.name)
        assert_text_fits(fig)
        assert study.folder.name in fig.get_suptitle().replace("\n", "")


# ---------------------------------------------------------------- a run


def write_summary(run_dir: Path, epochs: int, config=CONFIG) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with open(run_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, SUMMARY_FIELDS)
        writer.writeheader()
        for e in range(epochs):
            writer.writerow(dict(epoch=e, lr=3e-4 * (e + 1) / epochs, train_loss=2.3 - 0.2 * e, eval_loss=2.2 - 0.2 * e,
                                 eval_top1=30.0 + 5 * e, eval_top5=80.0, train_seconds=1.0, epoch_seconds=1.2,
                                 images_per_s=500.0, mean_firing_rate=0.2 - 0.01 * e))


def test_the_run_curves_come_from_the_folder_alone(tmp_path):
    run_dir = run_folder(tmp_path, "lif")
    write_summary(run_dir, epochs=40)
    fig = run_curves_figure(run_dir)
    assert_text_fits(fig)
    title = fig.get_suptitle().replace("\n", "")
    assert RUN.format(mode="lif") in title and "sdt" in title and "neuron lif" in title and "cifar10" in title
    assert [ax.get_title() for ax in fig.axes] == ["loss", "eval top-1 (%)", "learning rate", "mean firing rate (eval)"]


def test_a_run_curves_failure_is_one_warning_and_no_error(tmp_path, monkeypatch, warnings_seen):
    from spikedriven.engine import run_folder as module

    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(module, "run_curves_figure", broken)
    assert write_run_curves(tmp_path) is None and write_run_curves(tmp_path) is None
    assert len([m for m in warnings_seen() if "no fonts" in m]) == 1
    assert not (tmp_path / "curves.png").exists()


def test_a_training_run_draws_its_curves_as_it_goes(tmp_path, run_curves_drawn):
    # the figure needs epochs, not a real data set: two epochs of 8 steps on generated CIFAR images, at a rate
    # that makes the tiny model spike from the first epoch
    data = write_fake_cifar(tmp_path / "data", n_train=64, n_test=16, seed=3)
    out = tmp_path / "run"
    assert main(["train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(data), *TINY_RUN,
                 "--warmup-epochs", "0", "--lr", "0.01", "--output", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == PNG
    assert not list(out.glob(".*.tmp"))
    rows = read_summary(out)
    assert len(rows) == 2 and all(0 < float(r["mean_firing_rate"]) < 1 for r in rows)
    fig = run_curves_figure(out)
    assert_text_fits(fig)
    assert [len(line.get_xdata()) for line in fig.axes[1].lines] == [2]


def test_the_checker_finds_clipped_and_covered_text():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.set_title("a title far too long for a figure three inches wide, clipped at both ends")
    ax.set_xticks([0, 1], ["a long tick label", "another long one"])
    problems = text_problems(fig)
    assert any("outside" in p for p in problems) and any("overlaps" in p for p in problems)
