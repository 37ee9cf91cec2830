"""Energy models, by name: what one image costs, from the operations an evaluation counted.

* ``sdt`` — the SDT paper's convention (the default, so published figures stay
  comparable): synaptic operations of convolutions and linear layers only,
  ``E = E_MAC x T x MACs(first layer) + E_AC x SOPs``. Two neurons differ here
  only through their firing rates.
* ``neuron`` — ``sdt`` plus what the neurons and the attention compute: every
  neuron step by its neuron's declared cost (``StepOps``: the leak's multiply,
  the charge's adds, the threshold compare, the reset's select or subtract),
  the attention's spike masks (AND) and sums over tokens, the residual
  additions and the max-pools' compares. Batch norm is folded into the
  preceding convolution at inference: its scale costs nothing, its shift
  becomes that convolution's bias (one add per output element and step).
* ``lemaire`` — an analytical estimate after Lemaire et al. (ICONIP 2022):
  ``neuron``'s operations plus memory traffic. Each synaptic operation reads
  its weight and reads and writes the potential it adds to; each input event
  is read and addressed (each real input value read); each neuron step reads
  and writes its state; each output spike is written with its address.

Energies are per operation or access, in pJ, 45 nm figures after Horowitz
(ISSCC 2014): a 32-bit float add 0.9, multiply 3.7, MAC 4.6; an 8-bit integer
add 0.03 as the cost of a 1-bit AND; 5 pJ to read or write a 32-bit word of a
small SRAM (an 8 KB array reads 64 bits for about 10 pJ); 0.1 pJ for a 32-bit
integer add computing an address. Every constant is printed with the result
and can be set (``--energy-constants e_read=2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

from ..errors import ConfigError, did_you_mean

__all__ = ["ENERGY_MODELS", "Counts", "LayerCount", "NeuronCount", "estimate", "resolve_energy_models"]


@dataclass(frozen=True)
class Constant:
    default: float  # pJ
    doc: str


@dataclass
class LayerCount:
    """A convolution or linear layer, per image: how it ran."""

    name: str
    spike_input: bool
    time_steps: int
    macs_per_step: int
    ops: float  # SOPs (spike-fed) or T x MACs (real-valued input)
    input_reads: float  # input events (spike-fed) or input values x T
    output_elements: float  # per step
    weights: int


@dataclass
class NeuronCount:
    """A neuron layer, per image."""

    name: str
    neuron: str  # registered name
    time_steps: int
    neurons: float  # per step
    events: float  # spikes emitted (a level-k spike is k)
    add: int
    mul: int
    compare: int
    select: int
    state_reads: int
    state_writes: int

    @property
    def steps(self) -> float:
        return self.time_steps * self.neurons


@dataclass
class Counts:
    layers: list[LayerCount]
    neurons: list[NeuronCount]
    structure: dict = field(default_factory=dict)  # per image: "and", "add", "compare", "mul" outside layers and neurons


def _component(name: str, kind: str, count: float, energy_pj: float) -> dict:
    return {"name": name, "kind": kind, "count": count, "energy_j": energy_pj * 1e-12}


def _constants_text(c: Mapping[str, float]) -> str:
    """The constants under the names ``--energy-constants`` takes."""
    return "constants: " + ", ".join(f"{k} = {v:g} pJ" for k, v in c.items())


class EnergyModel:
    name: ClassVar[str]
    title: ClassVar[str]
    constants: ClassVar[dict[str, Constant]]

    def convention(self, c: Mapping[str, float]) -> str:
        raise NotImplementedError

    def components(self, counts: Counts, c: Mapping[str, float]) -> list[dict]:
        raise NotImplementedError

    prices_neurons: ClassVar[bool] = False

    def notes(self, counts: Counts) -> list[str]:
        """What the estimate cannot price, in words."""
        if not self.prices_neurons:
            return []
        free = sorted({n.neuron for n in counts.neurons if not (n.add or n.mul or n.compare or n.select)})
        return [f"neuron {name} declares no cost per step (its class's `ops`), so its steps count as free"
                for name in free]

    def estimate(self, counts: Counts, c: Mapping[str, float]) -> dict:
        parts = self.components(counts, c)
        total = sum(p["energy_j"] for p in parts)
        by_kind: dict[str, float] = {}
        for p in parts:
            by_kind[p["kind"]] = by_kind.get(p["kind"], 0.0) + p["energy_j"]
        return {"model": self.name, "total_j": total, "by_kind_j": by_kind, "components": parts,
                "constants_pj": dict(c), "convention": self.convention(c), "notes": self.notes(counts)}


def _layer_compute(layers: Sequence[LayerCount], c: Mapping[str, float]) -> list[dict]:
    return [_component(l.name, "AC" if l.spike_input else "MAC", l.ops, l.ops * (c["e_ac"] if l.spike_input else c["e_mac"]))
            for l in layers]


def _neuron_compute(neurons: Sequence[NeuronCount], c: Mapping[str, float]) -> list[dict]:
    out = []
    for n in neurons:
        per_step = n.add * c["e_add"] + n.mul * c["e_mul"] + n.compare * c["e_compare"] + n.select * c["e_select"]
        out.append(_component(n.name, "neuron", n.steps, n.steps * per_step))
    return out


# What each kind of structure operation is, and the constant it costs.
STRUCTURE_KINDS = {
    "and": ("attention masks (AND of two spikes)", "e_and"),
    "mul": ("attention masks of multi-level spikes (small integer multiplies)", "e_mul"),
    "add": ("token sums and residual additions", "e_add"),
    "compare": ("max-pool compares", "e_compare"),
    "or": ("max-pools of binary spike frames (OR)", "e_and"),
    "bias": ("bias adds (batch norm folded into its convolution)", "e_add"),
}


def _structure_compute(structure: Mapping[str, float], c: Mapping[str, float]) -> list[dict]:
    unknown = [k for k in structure if k not in STRUCTURE_KINDS]
    if unknown:  # a block's inference_ops named an operation no model knows a price for
        raise ValueError(f"unknown operation kind {', '.join(unknown)}; the kinds are {', '.join(STRUCTURE_KINDS)}")
    return [_component(STRUCTURE_KINDS[k][0], k, v, v * c[STRUCTURE_KINDS[k][1]]) for k, v in structure.items() if v]


SDT_CONSTANTS = {"e_mac": Constant(4.6, "a multiply-accumulate (MAC), 32-bit float"),
                 "e_ac": Constant(0.9, "an accumulate (AC), 32-bit float add")}
OP_CONSTANTS = {
    "e_add": Constant(0.9, "an add or subtract, 32-bit float"),
    "e_mul": Constant(3.7, "a multiply, 32-bit float (the leak's 1/tau; a shift for tau = 2 would cost less)"),
    "e_compare": Constant(0.9, "a compare (a subtraction's sign)"),
    "e_select": Constant(0.9, "a select (a hard reset's V_reset where a spike fired)"),
    "e_and": Constant(0.03, "a 1-bit AND (or OR) of two spikes (an 8-bit integer add's cost, an upper bound)"),
}
MEMORY_CONSTANTS = {
    "e_read": Constant(5.0, "reading a 32-bit word from a small SRAM"),
    "e_write": Constant(5.0, "writing a 32-bit word to a small SRAM"),
    "e_addr": Constant(0.1, "computing an address (a 32-bit integer add)"),
}


class SDT(EnergyModel):
    name, title = "sdt", "SDT paper's convention"
    constants = SDT_CONSTANTS

    def convention(self, c):
        return ("per image; only convolutions and linear layers, MACs without bias; E_snn = E_MAC x T x MACs(layers fed "
                "by real values: the first conv; a head on time-averaged features runs once, T = 1) + E_AC x sum "
                "SOPs(spike-fed layers), SOP_l = fr_in(l) x T x MACs_l, fr_in = "
                "spike events per input and step (a multi-level spike k / levels is k events); E_ann = E_MAC x sum of "
                f"dense MACs of all layers (one pass, no T); E_MAC = {c['e_mac']:g} pJ, E_AC = {c['e_ac']:g} pJ")

    def components(self, counts, c):
        return _layer_compute(counts.layers, c)


class NeuronAware(EnergyModel):
    name, title = "neuron", "sdt + neuron steps, attention masks and sums, residuals, pools"
    constants = {**SDT_CONSTANTS, **OP_CONSTANTS}
    prices_neurons = True

    def convention(self, c):
        return ("per image; sdt's layer operations, plus each neuron step at its neuron's declared cost "
                "(adds x E_add + multiplies x E_mul + compares x E_compare + selects x E_select), the attention's "
                "spike masks x E_and (x E_mul for multi-level spikes), its token sums and the residual additions "
                "x E_add, max-pool compares x E_compare; batch norm folded into the preceding convolution: its "
                "scale costs nothing, its shift is that convolution's bias, one add per output element and step "
                "(x E_add); the head's mean over tokens and steps left out (under 0.1 % of the operations); "
                + _constants_text(c))

    def components(self, counts, c):
        return _layer_compute(counts.layers, c) + _neuron_compute(counts.neurons, c) + _structure_compute(counts.structure, c)


class Lemaire(EnergyModel):
    name, title = "lemaire", "after Lemaire et al. (2022): operations, addressing, memory traffic"
    constants = {**SDT_CONSTANTS, **OP_CONSTANTS, **MEMORY_CONSTANTS}
    prices_neurons = True

    def convention(self, c):
        return ("per image; neuron's operations, plus memory: each synaptic operation (SOP, or MAC of a real-valued "
                "layer) reads its weight (E_read) and reads and writes the potential it adds to (E_read + E_write); "
                "each input event of a spike-fed layer is read and addressed (E_read + E_addr), each real input value "
                "read (E_read); each neuron step reads and writes its state (state reads x E_read + writes x E_write); "
                "each output spike event is written with its address (E_write + E_addr); " + _constants_text(c))

    def components(self, counts, c):
        parts = NeuronAware.components(self, counts, c)
        for l in counts.layers:
            synaptic = l.ops * (c["e_read"] * 2 + c["e_write"])
            inputs = l.input_reads * (c["e_read"] + (c["e_addr"] if l.spike_input else 0.0))
            parts.append(_component(f"{l.name} memory", "memory", l.ops + l.input_reads, synaptic + inputs))
        for n in counts.neurons:
            accesses = n.steps * (n.state_reads + n.state_writes)
            energy = n.steps * (n.state_reads * c["e_read"] + n.state_writes * c["e_write"])
            if accesses:
                parts.append(_component(f"{n.name} state", "memory", accesses, energy))
            if n.events:
                parts.append(_component(f"{n.name} output spikes", "memory", n.events, n.events * (c["e_write"] + c["e_addr"])))
        return parts


ENERGY_MODELS: dict[str, EnergyModel] = {m.name: m for m in (SDT(), NeuronAware(), Lemaire())}


def resolve_energy_models(names: Sequence[str], constants: Mapping[str, float] | None = None) -> list[tuple[EnergyModel, dict]]:
    """The models asked for, each with its constants (pJ; the defaults, with ``constants`` over them)."""
    constants = dict(constants or {})
    unknown = [n for n in names if n not in ENERGY_MODELS]
    if unknown:
        named = "; ".join(f"unknown energy model {name!r}{did_you_mean(name, ENERGY_MODELS)}" for name in unknown)
        raise ConfigError(f"{named}; the registered energy models are {', '.join(ENERGY_MODELS)}")
    if not names:
        raise ConfigError("give at least one energy model (sdt, neuron, lemaire)")
    models = [ENERGY_MODELS[n] for n in dict.fromkeys(names)]
    known = {k for m in models for k in m.constants}
    stray = [k for k in constants if k not in known]
    if stray:
        raise ConfigError(f"energy constant {', '.join(stray)} is not used by {', '.join(m.name for m in models)}; "
                          f"their constants are {', '.join(sorted(known))}")
    for key, value in constants.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"energy constant {key} must be a positive number of pJ, got {value!r}")
    return [(m, {k: float(constants.get(k, const.default)) for k, const in m.constants.items()}) for m in models]


def estimate(counts: Counts, models: Sequence[tuple[EnergyModel, dict]]) -> dict:
    return {m.name: m.estimate(counts, c) for m, c in models}
