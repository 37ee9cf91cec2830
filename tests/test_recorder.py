"""The spike recorder: every layer's spikes counted per time step, in an eager or a compiled model."""

import pytest
import torch
from torch import nn

from spikedriven import SpikeRecorder
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.neurons import NeuronSpec, create_neuron

from helpers import tiny_model_kwargs


def _by_hand(spikes: dict, levels: int = 1) -> dict:
    return {name: sum(s.flatten(2).sum((1, 2), dtype=torch.float64) for s in outs) * levels
            for name, outs in spikes.items()}


@pytest.mark.parametrize("mode", ["if_soft", "multispike"])
def test_the_counts_are_the_spikes_each_layer_emitted(mode):
    torch.manual_seed(0)
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode, time_steps=3)).eval()
    batches = [torch.randn(4, 3, 16, 16) * 3, torch.randn(3, 3, 16, 16) * 3]  # a partial batch too
    with torch.no_grad(), SpikeRecorder(model, keep_spikes=True) as rec:
        for images in batches:
            model(images)
    expected = _by_hand(rec.spikes, model.spike_levels)
    counts = rec.spike_counts
    assert list(counts) == list(rec.layers) and all(torch.equal(counts[n], expected[n]) for n in counts)
    assert all(n == 7 * rec.spikes[name][0][0].numel() // 4 for name, n in rec.element_counts.items())
    assert not any(layer.tally_spikes or layer.spike_tally is not None for layer in rec.layers.values())


def test_a_layer_called_twice_in_a_forward_counts_both_calls_and_a_part_of_the_model_counts_too():
    neuron = create_neuron(NeuronSpec("if"))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.neuron = neuron

        def forward(self, x):
            return self.neuron(x) + self.neuron(2 * x)

    x = torch.tensor([[0.6, 1.2], [0.6, 0.1]])  # [T=2, 2 neurons]
    # IF, threshold 1, hard reset to 0: x fires [0, 1] then [1, 0]; 2x fires [1, 1] then [1, 0]
    with SpikeRecorder(Twice()) as rec:
        Twice.forward(rec.model, x)  # no hook on the model runs: the recorder still takes the counts
    assert rec.spike_counts["neuron"].tolist() == [3.0, 2.0] and rec.element_counts["neuron"] == 4


def test_a_compiled_model_is_recorded_inside_its_graph_and_not_recompiled_by_the_next_recording():
    import torch._dynamo

    torch.manual_seed(0)
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="lif", time_steps=2)).eval()
    batches = [torch.randn(4, 3, 16, 16) * 3 for _ in range(3)]
    with torch.no_grad(), SpikeRecorder(model) as eager:
        for images in batches:
            model(images)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager")
    graphs = None
    for _ in range(2):  # two evaluations, as two epochs make
        with torch.no_grad(), SpikeRecorder(compiled) as rec:
            for images in batches:
                compiled(images)
        assert list(rec.spike_counts) == list(eager.spike_counts)
        assert all(torch.equal(rec.spike_counts[n], eager.spike_counts[n]) for n in eager.spike_counts)
        assert rec.element_counts == eager.element_counts
        graphs = graphs or torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs == 1
    with pytest.raises(ValueError, match="before torch.compile"):
        SpikeRecorder(compiled, keep_spikes=True)


def test_the_evaluation_pass_runs_a_partial_last_batch_on_the_eager_model_and_counts_it():
    """A compiled model would compile again for the partial batch (and then run graphs for any size); the
    evaluation pass runs it on the model it compiled instead: one graph, the eager pass's counts and top-1."""
    import torch._dynamo

    from spikedriven.engine.loop import evaluate

    torch.manual_seed(0)
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="if_soft", time_steps=2))
    batches = [(torch.randn(4, 3, 16, 16) * 3, torch.randint(0, 10, (4,))) for _ in range(3)]
    batches.append((torch.randn(3, 3, 16, 16) * 3, torch.randint(0, 10, (3,))))  # the partial last batch
    with SpikeRecorder(model) as eager:
        reference = evaluate(model, batches, torch.device("cpu"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager")
    for _ in range(2):  # two epochs' evaluations
        with SpikeRecorder(compiled) as rec:
            metrics = evaluate(compiled, batches, torch.device("cpu"))
        assert metrics["eval_images"] == 15 and metrics["eval_top1"] == reference["eval_top1"]
        assert rec.element_counts == eager.element_counts
        assert all(torch.equal(rec.spike_counts[n], eager.spike_counts[n]) for n in eager.spike_counts)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # eval mode, batch 4: no second graph
    assert not torch._dynamo.utils.counters["graph_break"]
