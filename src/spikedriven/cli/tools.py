"""The subcommands that describe: neurons, encodings, models, info, completion."""

from __future__ import annotations


from .common import _common


def _add_neurons(sub) -> None:
    p = sub.add_parser("neurons", help="list the registered neurons: equations, settings and defaults, cost per step",
                       description="List every registered neuron (built in, and those of --plugins) with its "
                                   "equations, its settings and their defaults, and the surrogate gradients.")
    p.add_argument("--plugins", nargs="+", default=[], metavar="FILE_OR_MODULE",
                   help="also load neurons of your own from these Python files or modules")
    _common(p)
    p.set_defaults(func=_run_neurons)


def _run_neurons(args, argv_hint: str) -> int:
    from ..neurons import describe_neurons
    from ..plugins import load_plugins

    load_plugins(args.plugins)
    print(describe_neurons())
    return 0


def _add_encodings(sub) -> None:
    p = sub.add_parser("encodings", help="list the registered input encodings: what each does, its settings",
                       description="List every registered input encoding (built in, and those of --plugins) with "
                                   "what the first layer reads and its settings and their defaults.")
    p.add_argument("--plugins", nargs="+", default=[], metavar="FILE_OR_MODULE",
                   help="also load encodings of your own from these Python files or modules")
    _common(p)
    p.set_defaults(func=_run_encodings)


def _run_encodings(args, argv_hint: str) -> int:
    from ..encodings import describe_encodings
    from ..plugins import load_plugins

    load_plugins(args.plugins)
    print(describe_encodings())
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models: their settings, sizes, parameters and MACs",
                       description="List every registered architecture with its settings and their defaults, and "
                                   "each of its entry points (the names --model takes) with its parameters and "
                                   "dense MACs per image and time step at its default input.")
    p.add_argument("--plugins", nargs="+", default=[], metavar="FILE_OR_MODULE",
                   help="also load models of your own from these Python files or modules")
    _common(p)
    p.set_defaults(func=_run_models)


def _run_models(args, argv_hint: str) -> int:
    from ..info import models_report
    from ..plugins import load_plugins

    load_plugins(args.plugins)
    print(models_report())
    return 0


def _add_info(sub) -> None:
    from ..config import add_config_flags

    p = sub.add_parser("info", help="what this machine and install can do: versions, devices, fused kernels, "
                                    "datasets, the model of a config",
                       description="Report package versions, CUDA / MPS / CPU cores, whether the fused neuron "
                                   "kernels can run, which datasets lie under --data-dir, and the parameters and "
                                   "dense MACs of the model a config describes (the default config without -c).")
    p.add_argument("-c", "--config", help="YAML config whose model (and data_dir) to report")
    p.add_argument("--checksums", action="store_true",
                   help="also compare CIFAR files with the official MD5 sums (reads every file, takes seconds)")
    _common(p)
    add_config_flags(p)  # --data-dir among them: the same folder a run with these flags would read
    p.set_defaults(func=_run_info)


def _run_info(args, argv_hint: str) -> int:
    from ..config import load_config, overrides_from_args
    from ..info import info_report

    cfg = load_config(args.config, overrides_from_args(args))
    print(info_report(cfg, args.config, checksums=args.checksums))
    return 0


def _add_completion(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh or fish)",
                       description="Print the completion script of spikedriven for a shell. Enable it with, e.g., "
                                   "`eval \"$(spikedriven completion bash)\"` in ~/.bashrc, or for zsh write it "
                                   "to a file named _spikedriven in a folder of your $fpath.")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh", "fish"), help="the shell")
    _common(p)
    p.set_defaults(func=_run_completion)


def _run_completion(args, argv_hint: str) -> int:
    from .completion import completion_script
    from .main import build_parser

    print(completion_script(build_parser(), args.shell))
    return 0
