"""timm's model contract, for every registered architecture (one entry point per layout a family fixes): the
head's widths, forward_features + forward_head as forward, reset_classifier, feature_info with
forward_intermediates and features_only=True, and torch.fx tracing, forward and backward, with timm's leaf
modules and functions. Small models (width 32, two blocks, T = 2) on a non-square input, so that a grid
put back from tokens shows a swapped height and width."""

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven.models import ARCHITECTURES

# the settings a family has of these: one width and depth, or a width per stage and the transformer stages' depths
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "embed_dims": [8, 16, 32, 32], "depths": [1, 1]}
TIME_STEPS, BATCH, HEIGHT, WIDTH = 2, 2, 40, 56


def _entry_points() -> list[str]:
    """Each family's first entry point of every layout it fixes (SDT's one, Spikformer's CIFAR and ImageNet)."""
    chosen = {}
    for family, arch in sorted(ARCHITECTURES.items()):
        for name in arch.sizes:
            chosen.setdefault((family, repr(sorted(arch.fixed(name).items()))), name)
    return list(chosen.values())


ENTRY_POINTS = _entry_points()


def small_model(name: str, **kwargs) -> torch.nn.Module:
    settings = ARCHITECTURES[_family(name)].settings
    sizes = {key: value for key, value in SMALL.items() if key in settings}
    torch.manual_seed(0)
    return timm.create_model(name, **{"img_size": 32, "num_classes": 10, "time_steps": TIME_STEPS, **sizes, **kwargs})


def _family(name: str) -> str:
    return next(family for family, arch in ARCHITECTURES.items() if name in arch.sizes)


def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(BATCH, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2


def grid(reduction: int) -> tuple[int, int]:
    return -(-HEIGHT // reduction), -(-WIDTH // reduction)


def test_every_family_is_covered():
    assert {_family(name) for name in ENTRY_POINTS} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_widths_and_feature_info(name):
    model = small_model(name)
    arch = ARCHITECTURES[_family(name)]
    modules = dict(model.named_modules())
    assert model.get_classifier().in_features == model.head_hidden_size
    if arch.feature_stages:  # a MetaFormer's stages: their own widths, the grid shrinking to 1/16
        assert model.num_features == model.head_hidden_size == SMALL["embed_dims"][-1]
        assert [i["num_chs"] for i in model.feature_info] == SMALL["embed_dims"]
        assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 16]
        assert all(info["module"] in modules for info in model.feature_info)
        return
    assert model.num_features == model.head_hidden_size == SMALL["embed_dim"]
    assert len(model.feature_info) == 1 + SMALL["depth"]  # the SPS, then each block
    for info in model.feature_info:
        assert info["num_chs"] == model.num_features and info["module"] in modules
    assert len({info["reduction"] for info in model.feature_info}) == 1  # the blocks keep the SPS's grid


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_features_then_head_is_forward_and_reset_heads_pool_as_declared(name):
    model, x = small_model(name).eval(), images()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert features.shape[:2] == (TIME_STEPS, BATCH)  # time-major: the heads need the time axis
        assert torch.equal(model.forward_head(features), logits)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (BATCH, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(x), pre)
        model.reset_classifier(0, "")  # no pooling: the features averaged over time, in their own layout
        assert torch.equal(model(x), features.mean(0))
        model.reset_classifier(7, "avg")
        assert model(x).shape == (BATCH, 7)
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(0, "max")
    with pytest.raises(ValueError, match="give num_classes=0 with it"):
        model.reset_classifier(5, "")
    assert small_model(name, num_classes=0, global_pool="")(x).shape[0] == BATCH


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_intermediates_and_features_only_give_the_declared_maps(name):
    model, x = small_model(name).eval(), images()
    getter = small_model(name, features_only=True).eval()
    getter.model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    info = model.feature_info
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        got = getter(x)
        model.reset_classifier(0, "")
        unpooled = model(x)
    assert getter.feature_info.channels() == [i["num_chs"] for i in info]
    assert getter.feature_info.reduction() == [i["reduction"] for i in info]
    assert len(maps) == len(got) == len(info)
    for expected, mine, theirs in zip(info, maps, got):
        assert mine.shape == (BATCH, expected["num_chs"], *grid(expected["reduction"]))
        assert torch.equal(mine, theirs)
    # the last map is the un-pooled output; tokens (Spikformer's CIFAR layout) were put back row by row
    last = maps[-1] if unpooled.dim() == 4 else maps[-1].flatten(2).transpose(1, 2)
    assert torch.equal(last, unpooled)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_intermediate_indices_formats_and_pruning(name):
    model, x = small_model(name).eval(), images()
    with torch.no_grad():
        _, maps = model.forward_intermediates(x)
        assert torch.equal(model.forward_intermediates(x, indices=1, intermediates_only=True)[0], maps[-1])
        early, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert early.shape[:2] == (TIME_STEPS, BATCH) and torch.equal(first[0], maps[0])
        nhwc = model.forward_intermediates(x, indices=[-1], output_fmt="NHWC", intermediates_only=True)[0]
        assert torch.equal(nhwc, maps[-1].permute(0, 2, 3, 1))
        with pytest.raises(ValueError, match="output_fmt must be one of NCHW, NHWC"):
            model.forward_intermediates(x, output_fmt="NCL")
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.stages()) == 2 and model.num_classes == 0
        assert all(torch.equal(a, b) for a, b in zip(model.forward_intermediates(x, intermediates_only=True), maps))


def traced(model: torch.nn.Module) -> torch.nn.Module:
    """The model as timm's tests trace it: torchvision's tracer with timm's leaf modules and functions."""
    tracer = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer)


def only(outputs: dict) -> torch.Tensor:
    (value,) = outputs.values()
    return value


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_fx_traced_forward_is_the_module(name):
    model, x = small_model(name).eval(), images()
    graph = traced(model).eval()
    with torch.no_grad():
        assert torch.equal(only(graph(x)), model(x))


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_fx_traced_backward_reaches_every_parameter_as_the_module_does(name):
    model, x = small_model(name).train(), images()
    model(x).square().mean().backward()
    expected = {key: p.grad.clone() for key, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    graph = traced(model).train()
    graph_params = dict(graph.named_parameters())
    assert sum(p.numel() for p in graph_params.values()) == sum(p.numel() for p in model.parameters())
    only(graph(x)).square().mean().backward()
    assert all(p.grad is not None for p in graph_params.values())
    for key, p in model.named_parameters():  # the graph holds the model's own layers, so their gradients
        torch.testing.assert_close(p.grad, expected[key], rtol=0, atol=0, msg=key)
