"""The subcommand that regenerates the published table from the study's run folders: runs-table."""

from __future__ import annotations

from .common import _common
from .study import LABELS_HELP, RUN_SYNTAX


def _add_runs_table(sub) -> None:
    p = sub.add_parser(
        "runs-table", help="the published table regenerated from run folders: as published, and mean ± std, "
                           "last-10 mean and the comparison with a baseline per setting",
        description="Group the runs by setting (neuron, u_th) and write runs_table.md and runs_table.csv: the figure "
                    "as published (the best epoch's top-1, the best over runs where a setting has several), and over "
                    "each setting's runs the mean and std of the best, final and last-10-epoch top-1, and the "
                    "difference of mean final top-1 to the baseline with its 95 %% interval and verdict.")
    p.add_argument("inputs", nargs="*", metavar="RUN",
                   help=RUN_SYNTAX + "; every run must record its neuron and threshold or be labelled (without RUN: "
                                     "the runs of --labels)")
    p.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    p.add_argument("--baseline", metavar="MODE[:U_TH]", help="the setting every other is compared with (default lif:1)")
    p.add_argument("--out", default="output/runs-table", metavar="DIR",
                   help="folder for runs_table.md and runs_table.csv (default output/runs-table)")
    _common(p)
    p.set_defaults(func=_run_runs_table)


def _baseline(text):
    """``--baseline MODE[:U_TH]``, read as a label (``MODE@U_TH``) is."""
    from ..analysis.run_labels import parse_label
    from ..errors import ConfigError

    if text is None:
        return "lif", 1.0
    mode, _, threshold = text.partition(":")
    try:
        label = parse_label(f"{mode}@{threshold}" if threshold else mode)
    except ConfigError as error:
        raise ConfigError(f"--baseline takes MODE or MODE:U_TH such as lif:1, got {text!r} ({error})") from None
    return label.mode, label.v_threshold


def _run_runs_table(args, argv_hint: str) -> int:
    from ..analysis.compare import read_runs
    from ..analysis.published import write_runs_table
    from ..analysis.run_labels import resolve_runs
    from ..errors import ConfigError

    if not args.inputs and args.labels is None:
        raise ConfigError("runs-table needs run folders or a --labels file naming them")
    baseline = _baseline(args.baseline)
    runs = read_runs(resolve_runs(args.inputs, args.labels))
    markdown, _ = write_runs_table(runs, args.out, baseline)
    print(markdown, end="")
    print(f"written: {args.out}/runs_table.md, {args.out}/runs_table.csv")
    return 0
