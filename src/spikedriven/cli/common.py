"""What every subcommand shares."""

from __future__ import annotations

import argparse
import contextlib


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")


def _energy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy", default="sdt", metavar="MODELS",
                   help="comma-separated energy models: sdt (the SDT paper's convention, default), neuron (+ neuron "
                        "steps, attention masks and sums, residuals), lemaire (+ memory traffic and addressing)")
    p.add_argument("--energy-constants", nargs="+", default=[], metavar="KEY=PJ",
                   help="energy constants in pJ over the defaults, e.g. e_read=2.5 e_mul=0.2 (every constant a model "
                        "uses is printed with its result)")
    p.add_argument("--e-mac", type=float, metavar="PJ", help="energy of one MAC in pJ (default 4.6; e_mac=PJ)")
    p.add_argument("--e-ac", type=float, metavar="PJ", help="energy of one AC in pJ (default 0.9; e_ac=PJ)")


def energy_choice(args) -> tuple[list[str], dict]:
    """``--energy`` and its constants (``--energy-constants``, ``--e-mac``, ``--e-ac``), checked."""
    from ..analysis import resolve_energy_models
    from ..config import parse_key_values
    from ..errors import ConfigError

    names = [n.strip() for n in args.energy.split(",") if n.strip()]
    constants = parse_key_values(args.energy_constants, "--energy-constants")
    for key, value in constants.items():
        if isinstance(value, str):  # YAML reads 1e-3 as text
            with contextlib.suppress(ValueError):
                constants[key] = float(value)
    for flag, key in (("e_mac", "e_mac"), ("e_ac", "e_ac")):
        value = getattr(args, flag)
        if value is None:
            continue
        if key in constants and constants[key] != value:
            raise ConfigError(f"--{flag.replace('_', '-')} {value:g} and --energy-constants {key}={constants[key]} "
                              "disagree; give one of them")
        constants[key] = value
    models = dict.fromkeys(["sdt", *names])
    resolve_energy_models(list(models), constants)  # every name and constant checked before anything runs
    return names, constants
