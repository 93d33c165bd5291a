"""Networks with named layer taps, built from the architecture specs of :mod:`layerbound.models.architectures`.

A network is a list of stages. Stage j is `pre` (the affine part: conv or linear, with batch norm
where the architecture has it) followed by `post` (ReLU, then pooling where the architecture has
it); the last stage has an empty `post` and yields the logits. The feature extractor f_j of the
papers is the network up to and including stage j, flattened:

    model.taps                   ordered tap names, e.g. medium: conv1 .. conv4, fc5, fc6, logits
    model.pre_activation_taps    "<tap>_pre" for every hidden stage (paper 002's first linear layer)
    model.features(x, tap)       f_j(x) as a (batch, n_j) tensor
    model.extractor(tap)         f_j as a module, for torch.func transforms

Padding ("same" by default, or the IBP reference's "valid") is explained in architectures.py.
"""

from __future__ import annotations

import torch
from torch import nn

from . import architectures

Shape = tuple[int, int, int]


class TappedNet(nn.Module):
    def __init__(self, arch: str, input_shape: Shape, num_classes: int, padding: str,
                 stages: list[tuple[str, nn.Module, nn.Module]]):
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.padding = padding
        self.taps = [name for name, _, _ in stages]
        self.pre_activation_taps = [f"{name}_pre" for name in self.taps[:-1]]
        self.pre = nn.ModuleList(p for _, p, _ in stages)
        self.post = nn.ModuleList(q for _, _, q in stages)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He initialization for the ReLU layers: with PyTorch's default init these deep plain CNNs
        # (no batch norm) barely move from chance in the few epochs a CPU run affords.
        for stage in self.pre[:-1]:
            for layer in stage.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for pre, post in zip(self.pre, self.post):
            x = post(pre(x))
        return x

    def _locate(self, tap: str) -> tuple[int, bool]:
        if tap in self.taps:
            return self.taps.index(tap), True
        if tap in self.pre_activation_taps:
            return self.pre_activation_taps.index(tap), False
        raise KeyError(f"{self.arch} has no tap {tap!r}; taps: {', '.join(self.taps + self.pre_activation_taps)}")

    def features(self, x: torch.Tensor, tap: str) -> torch.Tensor:
        """f_j(x) flattened to (batch, n_j)."""
        index, post_activation = self._locate(tap)
        for j in range(index + 1):
            x = self.pre[j](x)
            if j == index:
                # flatten(1) orders features (C, H, W). On a channels-last net (the CPU collision
                # search) converting here, before the last activation, keeps that activation's
                # backward in one layout: measured ~10% faster Jacobian rows at conv taps.
                x = x.contiguous()
            if j < index or post_activation:
                x = self.post[j](x)
        return x.flatten(1)

    def extractor(self, tap: str) -> "FeatureExtractor":
        self._locate(tap)
        return FeatureExtractor(self, tap)

    def tap_widths(self) -> dict[str, int]:
        """n_j for every tap (post- and pre-activation), from one forward pass of a zero input."""
        x = torch.zeros((1, *self.input_shape), device=next(self.parameters()).device)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            widths = {t: self.features(x, t).shape[1] for t in self.taps + self.pre_activation_taps}
        self.train(was_training)
        return widths


class FeatureExtractor(nn.Module):
    """f_j as a module: (batch, *input_shape) -> (batch, n_j)."""

    def __init__(self, net: TappedNet, tap: str):
        super().__init__()
        self.net = net
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x, self.tap)


# --- building the stages from the specs of architectures.py --------------------------------------

def _conv(c_in: int, c_out: int, kernel: int, stride: int, padding: str) -> nn.Module:
    if padding == "valid":
        return nn.Conv2d(c_in, c_out, kernel, stride=stride)
    if stride == 1 and kernel % 2 == 0:
        # Size-preserving for an even kernel needs one more pixel bottom/right (as TensorFlow's SAME).
        lo = (kernel - 1) // 2
        return nn.Sequential(nn.ZeroPad2d((lo, kernel - 1 - lo, lo, kernel - 1 - lo)),
                             nn.Conv2d(c_in, c_out, kernel, stride=1))
    # 3x3/1 keeps the size; 3x3/2 and 4x4/2 halve even sizes.
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2)


def _stages(arch: str, input_shape: Shape, num_classes: int, padding: str) -> list[tuple[str, nn.Module, nn.Module]]:
    """(tap, pre, post) for every layer: pre = conv or linear (with batch norm), post = ReLU (+ pool)."""
    widths = architectures.tap_widths(arch, input_shape, num_classes, padding)
    names = architectures.tap_names(arch)
    stages: list[tuple[str, nn.Module, nn.Module]] = []
    channels, width = input_shape[0], input_shape[0] * input_shape[1] * input_shape[2]
    for name, layer in zip(names, architectures.layers(arch)):
        if isinstance(layer, architectures.Conv):
            pre = _conv(channels, layer.channels, layer.kernel, layer.stride, layer.padding or padding)
            if layer.batch_norm:
                pre = nn.Sequential(pre, nn.BatchNorm2d(layer.channels))
            post = nn.Sequential(nn.ReLU(), nn.MaxPool2d(layer.pool)) if layer.pool > 1 else nn.ReLU()
            channels = layer.channels
        else:
            linear = nn.Linear(width, layer.width)
            # The first dense layer flattens the image (or the last conv layer's output).
            pre = nn.Sequential(nn.Flatten(), linear) if not stages or stages[-1][0].startswith("conv") else linear
            post = nn.ReLU()
        stages.append((name, pre, post))
        width = widths[name]
    logits = nn.Linear(width, num_classes)
    if not stages:
        logits = nn.Sequential(nn.Flatten(), logits)
    stages.append(("logits", logits, nn.Identity()))
    return stages


def build(arch: str, input_shape: Shape, num_classes: int, padding: str = "same") -> TappedNet:
    """Build a registered architecture (architectures.ARCHITECTURES) for inputs of shape (C, H, W)."""
    architectures.layers(arch)   # names the registered architectures if `arch` is not one
    if padding not in architectures.PADDINGS:
        raise ValueError(f"padding must be one of {architectures.PADDINGS}, not {padding!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), not {input_shape}")
    return TappedNet(arch, input_shape, num_classes, padding, _stages(arch, input_shape, num_classes, padding))
