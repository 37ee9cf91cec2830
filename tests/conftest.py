import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


def tiny_model_kwargs(**overrides):
    """A small SDT that runs in milliseconds on CPU."""
    kwargs = dict(num_classes=10, img_size=16, in_chans=3, embed_dim=32, depth=1, num_heads=4, mlp_ratio=2, T=2)
    kwargs.update(overrides)
    return kwargs
