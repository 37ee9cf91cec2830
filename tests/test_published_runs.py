"""The original study's run folders as published (summary alone or with args.yaml and sdt.log, resumed runs
in segments, odd line endings), labels for what they do not record, and the published table regenerated."""

import math

import pytest
import yaml
from scipy import stats

from spikedriven.analysis.compare import read_runs
from spikedriven.analysis.published import setting_rows
from spikedriven.analysis.run_labels import NeuronLabel, parse_label, parse_run_argument, resolve_runs
from spikedriven.analysis.runs import read_run, runs_markdown, runs_table
from spikedriven.cli import main
from spikedriven.errors import ConfigError

from helpers import run_cli

HEADER = "epoch,train_loss,eval_loss,eval_top1,eval_top5"
STAMP = "2023-10-01 12:00:00,123"


# ------------------------------------------------------------------ writers of the original's formats


def top1_text(value):
    return f"{round(value, 2):g}"  # as the original wrote it: 94.2, 94.44, 93


def write_summary(path, rows, ending="\r\r\n", blank_after_rows=False, starts=None):
    """timm's summary.csv; ``rows`` (epoch, top1); ``starts``: indices of rows before which the training
    started again and wrote the header anew."""
    lines = [HEADER]
    for i, (epoch, top1) in enumerate(rows):
        if starts and i in starts:
            lines.append(HEADER)
        lines.append(f"{epoch},{2.0 - 0.01 * epoch:.4f},{1.0:.4f},{top1_text(top1)},{99.5}")
    joint = ending + ("\n" if blank_after_rows else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((joint.join(lines) + joint).encode())
    return path.parent


def log_line(message, level="INFO"):
    return f"{STAMP} {level}: {message}"


def write_log(folder, epochs_lr, param_count=2570282, resumed=None, best=(), ending="\n", append=False):
    """sdt.log: the start lines, Train lines every 100 steps of each epoch, a Test line, best-metric lines."""
    lines = [log_line(f"Model sdt created, param count:{param_count}"),
             log_line("AMP not enabled. Training in float32."), log_line("Scheduled epochs: 310"),
             log_line("Create dataloader: torch/cifar10")]
    if resumed:
        lines.append(log_line(f"Loaded checkpoint '{resumed[0]}' (epoch {resumed[1]})"))
    for epoch, lr in epochs_lr:
        for step in (0, 100, 200):
            lines.append(log_line(f"Train: {epoch} [ {step:3d}/781 ({100 * step // 781:3d}%)]  Loss: 1.234 (1.25)  "
                                  f"Time: 0.120s,  533.33/s  (0.121s,  528.93/s)  LR: {lr:.3e}  Data: 0.002 (0.003)"))
        lines.append(log_line("Test: [  78/78]  Time: 0.050 (0.060)  Loss:  0.3000 (0.3100)  Acc@1: 93.7500 "
                              "(94.2000)  Acc@5: 100.0000 (99.5000)"))
    lines += [log_line(f"*** Best metric: {top1} (epoch {epoch})") for top1, epoch in best]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "sdt.log", "ab" if append else "wb") as f:  # a resumed run in one folder appends
        f.write((ending.join(lines) + ending).encode())


def write_args(folder, **settings):
    values = {"model": "sdt", "dataset": "torch/cifar10", "epochs": 310, "seed": 42, "spike_mode": "if_soft",
              "rpe_mode": "conv", "encoder_type": "none", "lr": 0.0005, "resume": ""}
    values.update(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.yaml").write_text(yaml.safe_dump(values))


# ------------------------------------------------------------------ one folder, each layout

TWELVE = [40.0, 55.5, 63.25, 70.0, 74.5, 78.0, 80.5, 82.0, 81.0, 82.0, 81.5, 81.75]
TWELVE_LAST10 = (63.25 + 70.0 + 74.5 + 78.0 + 80.5 + 82.0 + 81.0 + 82.0 + 81.5 + 81.75) / 10  # epochs 2..11


@pytest.mark.parametrize("ending, blank", [("\r\r\n", False), ("\n", True), ("\r\n", True)])
def test_summary_alone_in_any_line_ending(tmp_path, ending, blank):
    folder = write_summary(tmp_path / "run" / "summary.csv", list(enumerate(TWELVE)), ending, blank)
    run = read_run(folder)
    assert run.epochs == list(range(12)) and run.eval_top1 == TWELVE
    assert run.best == (82.0, 7) and run.final == 81.75
    assert run.last_mean() == pytest.approx(TWELVE_LAST10) == pytest.approx(77.45)
    assert (run.source, run.mode, run.v_threshold, run.model, run.param_count) == ("original code", None, None,
                                                                                  None, None)


def test_args_and_log_give_the_settings(tmp_path):
    folder = write_summary(tmp_path / "run" / "summary.csv", list(enumerate(TWELVE)))
    write_args(folder, model="sdt", dataset="cifar10-from-args")  # args.yaml wins over the log
    write_log(folder, [(0, 1e-5), (1, 1.2344e-4), (2, 5e-4)], best=[(40.0, 0), (55.5, 1)], ending="\r\r\n")
    run = read_run(folder)
    assert (run.mode, run.seed, run.model, run.dataset) == ("if_soft", 42, "sdt", "cifar10-from-args")
    assert run.param_count == 2570282
    assert run.lr == {0: 1e-5, 1: 1.234e-4, 2: 5e-4}  # as logged, %.3e
    assert run.log.scheduled_epochs == 310 and run.log.best_metrics == [(40.0, 0), (55.5, 1)]
    assert run.log.resumed_from == []
    (folder / "args.yaml").unlink()
    assert read_run(folder).dataset == "torch/cifar10"  # from the log alone
    table = runs_table([run])
    assert "params" in table.splitlines()[0] and "2,570,282" in table


# ------------------------------------------------------------------ a resumed run in segments

# summary1.csv starts late (epochs 0-2 missing); summary2.csv resumed from epoch 6's checkpoint, so epochs 7 and
# 8 were trained twice (summary1's 8, the highest top-1 of all, is replaced); summary3.csv trains 12 again.
SEGMENTS = {
    "summary1.csv": [(3, 50.0), (4, 55.0), (5, 60.0), (6, 62.0), (7, 63.0), (8, 70.0)],
    "summary2.csv": [(7, 64.0), (8, 65.0), (9, 66.0), (10, 67.0), (11, 68.0), (12, 69.0)],
    "summary3.csv": [(12, 68.5), (13, 69.5), (14, 69.0), (15, 69.25)],
}
JOINED = [50.0, 55.0, 60.0, 62.0, 64.0, 65.0, 66.0, 67.0, 68.0, 68.5, 69.5, 69.0, 69.25]  # epochs 3..15
JOINED_LAST10 = (62.0 + 64.0 + 65.0 + 66.0 + 67.0 + 68.0 + 68.5 + 69.5 + 69.0 + 69.25) / 10  # epochs 6..15


def write_segments(root, one_folder=True):
    for i, (name, rows) in enumerate(SEGMENTS.items()):
        folder = root if one_folder else root.parent / f"{root.name}-part{i + 1}"
        write_summary(folder / name, rows, "\n" if i == 1 else "\r\r\n", blank_after_rows=i == 2)
        write_log(folder, [(e, 1e-4 * (i + 1)) for e, _ in rows], append=one_folder,
                  resumed=None if i == 0 else ("ckpt.pth.tar", rows[0][0] - 1))
    return [root] if one_folder else [root.parent / f"{root.name}-part{i + 1}" for i in range(3)]


def check_joined(run):
    assert run.epochs == list(range(3, 16)) and run.eval_top1 == JOINED
    assert run.final == 69.25
    assert run.last_mean() == pytest.approx(JOINED_LAST10) == pytest.approx(66.825)
    assert run.best == (70.0, 8) and run.best_replaced  # every evaluated row counts
    assert run.curve_best == (69.5, 13)
    assert [(r.epoch, r.top1) for r in run.replaced] == [(7, 63.0), (8, 70.0), (12, 69.0)]
    # the later segment's LR for an epoch trained twice
    assert run.lr[8] == pytest.approx(2e-4) and run.lr[12] == pytest.approx(3e-4) and run.lr[3] == pytest.approx(1e-4)
    assert run.log.resumed_from == [("ckpt.pth.tar", 6), ("ckpt.pth.tar", 11)]


def test_segments_in_one_folder(tmp_path):
    run = read_run(write_segments(tmp_path / "if-1-resumed"))
    check_joined(run)
    text = runs_markdown([run])
    assert "| 70.00 (8, replaced) |" in text
    assert "3 segments joined (summary1.csv 3-8; summary2.csv 7-12; summary3.csv 12-15); epochs 0-2 in none" in text
    assert "the joined curve's best is 69.50 (epoch 13)" in text


def test_segments_in_folders_given_in_any_order(tmp_path):
    folders = write_segments(tmp_path / "lif", one_folder=False)
    check_joined(read_run([folders[2], folders[0], folders[1]]))  # put in order by the epoch each starts at


def test_a_repeated_header_restarts_inside_one_file(tmp_path):
    rows = [(0, 40.0), (1, 60.0), (2, 55.0), (1, 50.0), (2, 52.0), (3, 53.0)]
    run = read_run(write_summary(tmp_path / "r" / "summary.csv", rows, starts={3}))
    assert run.eval_top1 == [40.0, 50.0, 52.0, 53.0]
    assert run.best == (60.0, 1) and run.best_replaced and run.final == 53.0


# ------------------------------------------------------------------ labels


def test_label_syntax():
    assert parse_label("if_soft@1.2") == NeuronLabel("if_soft", 1.2)
    assert parse_label("lif") == NeuronLabel("lif", 1.0)  # the neuron's default threshold
    assert parse_run_argument("a,b:if@0.8").folders[1].name == "b"
    assert parse_run_argument("runs/a:if@0.8").neuron == NeuronLabel("if", 0.8)
    assert parse_run_argument("runs/a").neuron is None


def test_a_folder_name_with_a_colon_is_a_path(tmp_path):
    folder = write_summary(tmp_path / "run:lif" / "summary.csv", [(0, 1.0)])
    spec = parse_run_argument(str(folder))
    assert spec.folders == (folder,) and spec.neuron is None
    spec = parse_run_argument(f"{folder}:if@1.2")  # split at the last ':' only
    assert spec.folders == (folder,) and spec.neuron == NeuronLabel("if", 1.2)


def test_compare_with_labels_on_the_command_line_and_from_a_file(tmp_path, capsys):
    a = write_summary(tmp_path / "a" / "summary.csv", list(enumerate(TWELVE)))
    write_log(a, [(0, 1e-4)])
    folders = write_segments(tmp_path / "b", one_folder=False)
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(
        {"labels": {"a": "if_soft@1.2"}, "runs": [{"folders": [f.name for f in folders], "label": "lif",
                                                   "name": "LIF resumed"}]}))
    code, out, err = run_cli(["compare", str(a), str(folders[1]), "--labels", str(tmp_path / "labels.yaml")], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("*")}
    assert "1.2 (label)" in rows["a"] and "if_soft (label)" in rows["a"] and "2,570,282" in rows["a"]
    assert "82.00 (7)" in rows["a"] and "77.45" in rows["a"]
    assert "1 (label)" in rows["LIF"] and "70.00 (8, replaced)" in rows["LIF"] and "66.83" in rows["LIF"]

    code, out, err = run_cli(["compare", f"{a}:if@0.8", ",".join(map(str, folders)) + ":if_soft"], capsys)
    assert code == 0, err
    assert "0.8 (label)" in out and "70.00 (8, replaced)" in out
    assert "b-part1+b-part2+b-part3" in out


def test_a_label_must_agree_with_what_is_recorded(tmp_path):
    folder = write_summary(tmp_path / "r" / "summary.csv", [(0, 1.0)])
    write_args(folder, spike_mode="if")
    with pytest.raises(ConfigError, match="records spike_mode 'if', but its label says 'lif'"):
        read_run(folder, neuron=parse_label("lif"))
    assert read_run(folder, neuron=parse_label("if@1.2")).from_label == ("v_threshold",)


def test_resolve_without_arguments_gives_the_files_runs(tmp_path):
    (tmp_path / "l.yaml").write_text("labels: {x: if@1}\nruns: [{folders: [y, z], label: lif}]\n")
    specs = resolve_runs([], tmp_path / "l.yaml")
    assert [s.folders for s in specs] == [(tmp_path / "x",), (tmp_path / "y", tmp_path / "z")]


# ------------------------------------------------------------------ bad input: one sentence, exit 2


def _no_summary(t):
    write_args(t / "r")
    return ["compare", str(t / "r")]


def _same_start(t):
    write_summary(t / "r" / "summary1.csv", [(0, 1.0), (1, 2.0)])
    write_summary(t / "r" / "summary2.csv", [(0, 1.5)])
    return ["compare", str(t / "r")]


def _backwards(t):
    write_summary(t / "r" / "summary1.csv", [(0, 1.0), (1, 2.0)])
    write_summary(t / "r" / "summary2.csv", [(5, 1.0), (9, 2.0), (7, 3.0)])
    return ["compare", str(t / "r")]


def _labels_file(t, text):
    write_summary(t / "r" / "summary.csv", [(0, 1.0)])
    (t / "l.yaml").write_text(text)
    return ["runs-table", "--labels", str(t / "l.yaml"), "--out", str(t / "out")]


BAD = [
    ("no summary", _no_summary, ["has no summary.csv", "summary1.csv"]),
    ("same start", _same_start, ["summary1.csv and", "summary2.csv both start at epoch 0", "cannot be decided"]),
    ("backwards", _backwards, ["summary2.csv goes from epoch 9 back to epoch 7", "overlap inconsistently"]),
    ("bad label", lambda t: ["compare", f"{t}/r:if_soft@high"], ["'if_soft@high' does not parse", "MODE@U_TH"]),
    ("label form", lambda t: ["compare", f"{t}/r:1.2"], ["'1.2' does not parse", "MODE or MODE@U_TH"]),
    ("unknown neuron", lambda t: ["compare", f"{t}/r:relu@1"], ["unknown neuron 'relu'", "registered neurons:",
                                                               "if_soft"]),
    ("zero threshold", lambda t: ["compare", f"{t}/r:lif@0"], ["'0' is not a positive threshold"]),
    ("file label", lambda t: _labels_file(t, "labels: {r: lif@x}\n"), ["'lif@x' does not parse"]),
    ("file key", lambda t: _labels_file(t, "label: {r: lif}\n"), ["unknown key 'label'", "runs:"]),
    ("file runs", lambda t: _labels_file(t, "runs: [{label: lif}]\n"), ["needs folders"]),
    ("unlabelled", lambda t: _labels_file(t, "runs: [{folders: [r]}]\n"), ["records no neuron", "MODE@U_TH"]),
    ("no runs", lambda t: ["runs-table"], ["needs run folders or a --labels file"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_sentence_and_exit_2(case, tmp_path, capsys):
    _, make, words = case
    code, _, err = run_cli(make(tmp_path), capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1
    for word in words:
        assert word in err, err


# ------------------------------------------------------------------ the published table regenerated


def tail_run(folder, tail, **args):
    """12 epochs: 80, 81, then the ten of ``tail`` (so the last-10 mean is the tail's mean)."""
    folder = write_summary(folder / "summary.csv", list(enumerate([80.0, 81.0] + tail)))
    if args:
        write_args(folder, **args)
    return folder


SEVEN = [92.0] * 7
RUNS = {  # name: (tail, best, best epoch, final)
    "lif-a": (SEVEN + [94.34, 93.0, 93.0], 94.34, 9, 93.0),
    "lif-b": (SEVEN + [93.0, 94.0, 93.5], 94.0, 10, 93.5),
    "soft-a": (SEVEN + [94.53, 94.0, 94.2], 94.53, 9, 94.2),
    "soft-b": (SEVEN + [94.19, 93.8, 94.0], 94.19, 9, 94.0),
    "hard-1.2": (SEVEN + [94.32, 93.0, 93.1], 94.32, 9, 93.1),
}


@pytest.fixture
def study_folders(tmp_path):
    tail_run(tmp_path / "lif-a", RUNS["lif-a"][0], spike_mode="lif")
    tail_run(tmp_path / "lif-b", RUNS["lif-b"][0])
    tail_run(tmp_path / "soft-a", RUNS["soft-a"][0], spike_mode="if_soft")
    tail_run(tmp_path / "soft-b", RUNS["soft-b"][0])
    tail_run(tmp_path / "hard-1.2", RUNS["hard-1.2"][0])
    (tmp_path / "labels.yaml").write_text("labels:\n  lif-a: lif@1\n  lif-b: lif\n  soft-a: if_soft@1\n"
                                          "  soft-b: if_soft@1.0\n  hard-1.2: if@1.2\n")
    return tmp_path


def welch(a, b):
    """Difference of means and its 95 % interval, Welch's, by the formula."""
    va, vb = stats.tvar(a) / len(a), stats.tvar(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = sum(a) / len(a) - sum(b) / len(b)
    return d, d - half, d + half


def test_rows_by_setting_by_hand(study_folders):
    rows = setting_rows(read_runs(resolve_runs([], study_folders / "labels.yaml")))
    by = {(r["mode"], r["v_threshold"]): r for r in rows}
    assert list(by) == [("lif", 1.0), ("if_soft", 1.0), ("if", 1.2)]
    lif, soft, hard = by.values()
    assert lif["as_published_top1"] == 94.34 and lif["as_published_note"] == "best of 2 runs: 94.34 (lif-a), 94.00 (lif-b)"
    assert soft["as_published_top1"] == 94.53 and soft["as_published_note"] == "best of 2 runs: 94.53 (soft-a), 94.19 (soft-b)"
    assert hard["as_published_top1"] == 94.32 and hard["as_published_note"] == "" and hard["seeds"] == 1
    assert lif["final_top1_mean"] == pytest.approx(93.25) and lif["final_top1_std"] == pytest.approx(math.sqrt(0.125))
    assert soft["best_top1_mean"] == pytest.approx(94.36) and soft["best_top1_std"] == pytest.approx(math.sqrt(0.0578))
    assert soft["last10_top1_mean"] == pytest.approx((92.673 + 92.599) / 2)
    assert hard["final_top1_std"] is None and hard["last10_epochs"] == 10
    assert lif["verdict"] == "baseline" and lif["vs_baseline"] is None

    d, low, high = welch([94.2, 94.0], [93.0, 93.5])
    assert soft["vs_baseline"] == pytest.approx(0.85) == pytest.approx(d)
    assert (soft["vs_baseline_low"], soft["vs_baseline_high"]) == (pytest.approx(low), pytest.approx(high))
    assert soft["test"] == "Welch's t-test"  # seeds unknown for soft-b
    assert soft["verdict"] == ("within noise" if low <= 0 <= high else "higher")
    assert hard["vs_baseline"] == pytest.approx(-0.15) and hard["verdict"] == "one run: no interval"
    assert hard["vs_baseline_low"] is None


def test_runs_table_command_writes_markdown_and_csv(study_folders, capsys):
    out = study_folders / "table"
    code, text, err = run_cli(["runs-table", "--labels", str(study_folders / "labels.yaml"), "--out", str(out)], capsys)
    assert code == 0, err
    md = (out / "runs_table.md").read_text()
    assert md in text
    assert "| sdt | LIF, hard reset | 1 (label) | 2 | 94.34 (9) [1] | 93.25 ± 0.35 | 94.17 ± 0.24 |" in md
    d, low, high = welch([94.2, 94.0], [93.0, 93.5])
    assert (f"| sdt | IF, soft reset | 1 (label) | 2 | 94.53 (9) [2] | 94.10 ± 0.14 | 94.36 ± 0.24 | 92.64 ± 0.05 "
            f"| {d:+.2f} [{low:+.2f}, {high:+.2f}] |") in md
    assert "| - | IF, hard reset | 1.2 (label) | 1 | 94.32 (9) | 93.10 | 94.32 |" in md
    assert "one run: no interval" in md
    assert "[1] best of 2 runs: 94.34 (lif-a), 94.00 (lif-b)" in md
    assert "[2] best of 2 runs: 94.53 (soft-a), 94.19 (soft-b)" in md
    assert "## The runs" in md and "| lif-b | original code |" in md
    csv_lines = (out / "runs_table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,mode,v_threshold,threshold_from_label,seeds,")
    assert len(csv_lines) == 4


def test_runs_table_baseline_and_labels_on_the_command_line(study_folders, capsys):
    t = study_folders
    args = ["runs-table", f"{t}/soft-a:if_soft@1", f"{t}/soft-b:if_soft@1", f"{t}/hard-1.2:if@1.2",
            "--baseline", "if_soft:1", "--out", str(t / "o")]
    code, text, err = run_cli(args, capsys)
    assert code == 0, err
    assert "no baseline" not in text and "| baseline |" in text
    assert "baseline has one run" not in text and f"{93.1 - 94.1:+.2f} | - | - | one run: no interval |" in text


def test_the_readmes_labels_file_and_the_help(tmp_path, capsys):
    from docs_text import block_with

    block = block_with("yaml", "runs:", "labels:")  # docs/how-to/original-runs.md
    (tmp_path / "l.yaml").write_text(block)
    specs = resolve_runs([], tmp_path / "l.yaml")
    assert [s.neuron for s in specs] == [NeuronLabel("if_soft", 1.2), NeuronLabel("lif", 1.0), NeuronLabel("if", 1.0)]
    assert len(specs[2].folders) == 2 and specs[2].name == "IF u_th 1 (a)"
    with pytest.raises(SystemExit) as done:
        main(["runs-table", "--help"])
    assert done.value.code == 0 and "DIR1,DIR2[:LABEL]" in capsys.readouterr().out
