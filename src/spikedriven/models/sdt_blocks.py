"""The blocks of the Spike-driven Transformer: spiking patch splitting (SPS), spike-driven self-attention (SDSA),
the spiking MLP, and a block of the two. Tensors are [T, B, C, H, W]; module names follow the original
implementation's state-dict layout."""

from __future__ import annotations

from typing import Callable

import torch
from timm.layers import register_notrace_module
from torch import nn

from ..neurons import SpikingNeuron
from ..spike_ops import SpikeConv2d, SpikeMaxPool2d, holds_backward_memory, norm_neuron, norm_then, per_step, spike_mul

# Layers fed by spikes keep their input for backward as bool, and a conv -> batch
# norm (-> neuron) chain goes through norm_neuron / norm_then, which choose what
# backward keeps and what it recomputes (spikedriven.spike_ops), by the memory mode
# of the block that calls them (@holds_backward_memory).


NeuronFactory = Callable[[], SpikingNeuron]


def _pool(enabled: bool, levels: int = 0) -> nn.Module:
    """A 3x3 / 2 max-pool; ``levels``: the levels of the spikes it sees (0: real values)."""
    if not enabled:
        return nn.Identity()
    if not levels:
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return SpikeMaxPool2d(kernel_size=3, stride=2, padding=1, levels=levels)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, bias: bool, levels: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A convolution and its batch norm; ``levels``: the levels of the spikes it sees (0: real values)."""
    if levels:
        conv = SpikeConv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias, levels=levels)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
    return conv, nn.BatchNorm2d(out_ch)


# torch.fx records it as one call: it hands norm_then a function, which a graph cannot hold as an argument
@register_notrace_module
@holds_backward_memory  # of its own norm_neuron and norm_then calls (spike_ops.set_backward_memory)
class SpikingPatchSplit(nn.Module):
    """SPS: four conv-BN stages from image to ``embed_dim`` channels, then a spiking relative position code
    added to the features: ``rpe_bn(RPE(neuron(feat))) + feat``, RPE one of ``RPE_MODES`` (the SDT's: conv)."""

    def __init__(self, in_chans: int, embed_dim: int, pooling_stat: str, neuron: NeuronFactory, levels: int = 1,
                 rpe_mode: str = "conv"):
        super().__init__()
        d = embed_dim
        pool = [flag == "1" for flag in pooling_stat]
        self.proj_conv, self.proj_bn = _conv_bn(in_chans, d // 8, 3, bias=False)  # sees the image
        self.proj_neuron, self.maxpool = neuron(), _pool(pool[0], levels)
        self.proj_conv1, self.proj_bn1 = _conv_bn(d // 8, d // 4, 3, bias=False, levels=levels)
        self.proj_neuron1, self.maxpool1 = neuron(), _pool(pool[1], levels)
        self.proj_conv2, self.proj_bn2 = _conv_bn(d // 4, d // 2, 3, bias=False, levels=levels)
        self.proj_neuron2, self.maxpool2 = neuron(), _pool(pool[2], levels)
        self.proj_conv3, self.proj_bn3 = _conv_bn(d // 2, d, 3, bias=False, levels=levels)
        self.maxpool3 = _pool(pool[3])  # acts on the real-valued BN output
        self.rpe_neuron = neuron()
        # the study's code builds the SDT's position conv in every mode, so it is in every state dict
        self.rpe_conv, self.rpe_bn = _conv_bn(d, d, 3, bias=False, levels=levels)
        self.rpe_mode = rpe_mode
        if rpe_mode == "linear":
            self.rpe_linear = nn.Linear(d, d, bias=False)
        elif rpe_mode == "sinusoidal":
            self.rpe_scale = nn.Parameter(torch.ones(1))
        elif rpe_mode == "learnable":
            if d % 2:
                raise ValueError(f"rpe_mode learnable splits the channels in two halves and needs an even "
                                 f"embed_dim, got {d}")
            self.rpe_pos_embed_h = nn.Parameter(torch.randn(1, d // 2, LEARNABLE_GRID, 1))
            self.rpe_pos_embed_w = nn.Parameter(torch.randn(1, d // 2, 1, LEARNABLE_GRID))
        elif rpe_mode == "dilated":
            self.rpe_dilated = (SpikeConv2d(d, d, 3, padding=2, dilation=2, bias=False, levels=levels) if levels
                                else nn.Conv2d(d, d, 3, padding=2, dilation=2, bias=False))
        elif rpe_mode != "conv":
            raise ValueError(f"unknown rpe_mode {rpe_mode!r}; the modes are {', '.join(RPE_MODES)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backward_memory
        x = norm_neuron(x, self.proj_bn, self.proj_neuron, pre=(self.proj_conv,), memory=memory)
        x = norm_neuron(x, self.proj_bn1, self.proj_neuron1, pre=(self.maxpool, self.proj_conv1), memory=memory)
        x = norm_neuron(x, self.proj_bn2, self.proj_neuron2, pre=(self.maxpool1, self.proj_conv2), memory=memory)
        feat = norm_then(x, self.proj_bn3, lambda y: per_step(self.maxpool3, y), pre=(self.maxpool2, self.proj_conv3),
                         memory=memory)
        return self.add_position(feat)

    def add_position(self, feat: torch.Tensor) -> torch.Tensor:
        """``rpe_bn(RPE(neuron(feat))) + feat`` for the features ``[T, B, D, H', W']``."""
        s = self.rpe_neuron(feat)  # binary spikes in every mode (sinusoidal then discards them)
        if self.rpe_mode in ("conv", "dilated"):
            conv = self.rpe_conv if self.rpe_mode == "conv" else self.rpe_dilated
            return norm_then(s, self.rpe_bn, pre=(conv,), memory=self.backward_memory) + feat
        if self.rpe_mode == "linear":  # over the channels of each token: the time-major layout a Linear counts in
            r = self.rpe_linear(s.movedim(2, -1)).movedim(-1, 2)
        elif self.rpe_mode == "sinusoidal":
            t, b, c, h, w = s.shape
            table = sinusoidal_table(c, h, w, device=s.device, dtype=feat.dtype)
            r = (self.rpe_scale * table).expand(t, b, c, h, w)
        else:  # learnable
            r = s + self.learned_positions(s.shape[-2], s.shape[-1])
        return per_step(self.rpe_bn, r) + feat

    def learned_positions(self, h: int, w: int) -> torch.Tensor:
        """P ``[1, D, h, w]``: the first half of the channels varies down the grid, the second across it."""
        rows = self.rpe_pos_embed_h[:, :, :h, :].expand(-1, -1, h, w)
        cols = self.rpe_pos_embed_w[:, :, :, :w].expand(-1, -1, h, w)
        return torch.cat([rows, cols], dim=1)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the position code's residual, and the
        learnable mode's addition of its positions to the spikes."""
        return {"add": output.numel() * (2 if self.rpe_mode == "learnable" else 1)}


# The study's position-embedding variants (its rpe_mode): what each adds to the SPS features, before rpe_bn.
RPE_MODES = {
    "conv": "the SDT's 3x3 convolution of the spikes",
    "linear": "a linear map of each token's spike channels (no spatial mixing)",
    "sinusoidal": "a fixed 2-D sine/cosine table times a learned scalar; the spikes are discarded",
    "learnable": "the spikes plus a learned position per row (half the channels) and per column (the other half)",
    "dilated": "a 3x3 convolution of the spikes with dilation 2",
}
LEARNABLE_GRID = 64  # the learnable mode's table covers grids of at most 64 x 64 tokens


def sinusoidal_table(channels: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The sinusoidal mode's table ``[channels, h, w]`` at integer grid positions: the first ``channels // 2``
    channels code the row (sin, cos pairs at frequencies 10000^(-i / half)), the rest the column."""
    half = channels // 2
    table = torch.zeros(channels, h, w, dtype=torch.float32, device=device)
    rows = torch.arange(h, dtype=torch.float32, device=device)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32, device=device)[None, :].expand(h, w)
    # pairs start at even channel numbers in both halves, as the study's code counts them
    for start, end, grid in ((0, half, rows), (half, channels, cols)):
        first = torch.arange(start + start % 2, end, 2, device=device)
        freq = (10000.0 ** (-(first - start).double() / (end - start))).float()
        angle = grid[None] * freq[:, None, None]
        table[first] = angle.sin()
        paired = first + 1 < end
        table[first[paired] + 1] = angle[paired].cos()
    return table.to(dtype)


@register_notrace_module  # torch.fx records it as one call: it splits the heads by its input's shape
@holds_backward_memory  # of its own spike products, norm_neuron and norm_then (spike_ops.set_backward_memory)
class SpikeDrivenSelfAttention(nn.Module):
    """SDSA: ``q * SN(sum_tokens(k * v))`` with binary q, k, v; no softmax, no scale.

    The product is channel-wise, so heads only group channels: channel
    ``c = head * (dim / heads) + d`` as in the reference.

    ``dvs_mode`` (the original's attention for event data): a 3x3 max-pool,
    stride 1, on k and v over each frame, and on k * v and on q * kv in the
    original's head layout ``[heads, N, dim/heads]``, where the window spans
    tokens and the channels of a head. Here the heads are held as
    ``[heads, dim/heads, N]`` (a view of ``[C, H, W]``), and those two pools run
    on the original's layout (``_pool_heads``): the forward would be the same
    either way, the gradient at the windows' ties would not.
    """

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory, attn_neuron: NeuronFactory, levels: int = 1,
                 dvs_mode: bool = False):
        super().__init__()
        self.num_heads, self.levels, self.dvs_mode = num_heads, levels, dvs_mode
        if dvs_mode:  # no parameters: the original's checkpoints have no keys for them either
            self.frame_pool = SpikeMaxPool2d(kernel_size=3, stride=1, padding=1, levels=levels)
            self.head_pool = SpikeMaxPool2d(kernel_size=3, stride=1, padding=1, levels=levels * levels)
        self.shortcut_neuron = neuron()
        self.q_conv, self.q_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.k_conv, self.k_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.v_conv, self.v_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.kv_neuron = attn_neuron()
        # q * kv multiplies spikes of `levels` levels each: the output convolution sees levels**2 levels
        self.proj_conv, self.proj_bn = _conv_bn(dim, dim, 1, bias=True, levels=levels * levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        s = self.shortcut_neuron(x)
        # [T, B, heads, dim/heads, N]: a view of [T, B, C, H, W], no copy
        heads = (t, b, self.num_heads, c // self.num_heads, h * w)
        memory = self.backward_memory
        q = norm_neuron(s, self.q_bn, self.q_neuron, pre=(self.q_conv,), memory=memory).reshape(heads)
        k = norm_neuron(s, self.k_bn, self.k_neuron, pre=(self.k_conv,), memory=memory)
        v = norm_neuron(s, self.v_bn, self.v_neuron, pre=(self.v_conv,), memory=memory)
        if self.dvs_mode:
            k, v = per_step(self.frame_pool, k), per_step(self.frame_pool, v)
        kv = spike_mul(k.reshape(heads), v.reshape(heads), self.levels, self.backward_memory)
        if self.dvs_mode:
            kv = self._pool_heads(kv)
        kv = self.kv_neuron(kv.sum(dim=-1, keepdim=True))  # sum over tokens
        y = spike_mul(q, kv, self.levels, self.backward_memory)
        if self.dvs_mode:
            y = self._pool_heads(y)
        return norm_then(y.reshape(t, b, c, h, w), self.proj_bn, pre=(self.proj_conv,), memory=self.backward_memory) + x

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the masks k * v and q * kv
        (an AND of binary spikes, a small integer product of multi-level ones), the sum over the N
        tokens (N - 1 adds per channel) and the residual."""
        t, b, c, h, w = inputs[0].shape
        elements = t * b * c * h * w
        return {"and" if self.levels == 1 else "mul": 2 * elements, "add": t * b * c * (h * w - 1) + elements}

    def _pool_heads(self, z: torch.Tensor) -> torch.Tensor:
        """The 3x3 max-pool over (tokens, head channels) of ``[T, B, heads, dim/heads, N]``, run on the original's
        ``[T, B, heads, N, dim/heads]``. Spikes tie often in a window, and a max-pool's backward gives the
        gradient to the first maximum in its scan order (rows, then columns): pooled transposed, the same
        maxima would hand their gradients to other spikes than the original's, at every step of training."""
        tokens_first = z.transpose(-1, -2)
        pooled = self.head_pool(tokens_first.reshape(-1, 1, *tokens_first.shape[-2:]))
        return pooled.reshape(tokens_first.shape).transpose(-1, -2)


@holds_backward_memory  # of its own norm_neuron and norm_then calls (spike_ops.set_backward_memory)
class SpikingMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, neuron: NeuronFactory, levels: int = 1):
        super().__init__()
        self.fc1_neuron = neuron()
        self.fc1_conv, self.fc1_bn = _conv_bn(dim, hidden, 1, bias=True, levels=levels)
        self.fc2_neuron = neuron()
        self.fc2_conv, self.fc2_bn = _conv_bn(hidden, dim, 1, bias=True, levels=levels)
        self.hidden_residual = hidden == dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        s = self.fc1_neuron(x)
        if self.hidden_residual:
            identity = norm_then(s, self.fc1_bn, pre=(self.fc1_conv,), memory=self.backward_memory) + identity
            s = self.fc2_neuron(identity)
        else:
            s = norm_neuron(s, self.fc1_bn, self.fc2_neuron, pre=(self.fc1_conv,), memory=self.backward_memory)
        return norm_then(s, self.fc2_bn, pre=(self.fc2_conv,), memory=self.backward_memory) + identity

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the residual additions."""
        return {"add": output.numel() * (2 if self.hidden_residual else 1)}


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, neuron: NeuronFactory, attn_neuron: NeuronFactory,
                 levels: int = 1, dvs_mode: bool = False):
        super().__init__()
        self.attn = SpikeDrivenSelfAttention(dim, num_heads, neuron, attn_neuron, levels, dvs_mode)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), neuron, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))  # each adds its own residual
