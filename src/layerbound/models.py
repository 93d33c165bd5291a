"""Model registry: every architecture by name in one place, each exposing its ordered layer taps.

A network is a list of stages. Stage j is `pre` (the affine part: conv or linear, with batch norm
where the architecture has it) followed by `post` (ReLU, then pooling where the architecture has
it); the last stage has an empty `post` and yields the logits. The feature extractor f_j of the
papers is the network up to and including stage j, flattened:

    model.taps                   ordered tap names, e.g. medium: conv1 .. conv4, fc5, fc6, logits
    model.pre_activation_taps    "<tap>_pre" for every hidden stage (paper 002's first linear layer)
    model.features(x, tap)       f_j(x) as a (batch, n_j) tensor
    model.extractor(tap)         f_j as a module, for torch.func transforms

Padding: the IBP reference pads VALID, but paper 001's layer widths fit padding that keeps 3x3/1
convolutions size-preserving and halves with 4x4/2 ("same", the default here); `padding="valid"`
gives the IBP widths.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

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


# --- building blocks -------------------------------------------------------------------------

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


def _relu() -> nn.Module:
    return nn.ReLU()


def _conv_stack(input_shape: Shape, num_classes: int, padding: str,
                convs: list[tuple[int, int, int]], fcs: list[int]) -> list[tuple[str, nn.Module, nn.Module]]:
    """IBP-style CNN: convs as (channels, kernel, stride), then fully connected widths, then logits."""
    stages: list[tuple[str, nn.Module, nn.Module]] = []
    c, h, w = input_shape
    probe = torch.zeros(1, c, h, w)
    for i, (c_out, k, s) in enumerate(convs, start=1):
        conv = _conv(c, c_out, k, s, padding)
        probe = conv(probe)
        stages.append((f"conv{i}", conv, _relu()))
        c = c_out
    width = probe.numel()
    for i, f in enumerate(fcs, start=len(convs) + 1):
        first = not stages or stages[-1][0].startswith("conv")
        layer = nn.Sequential(nn.Flatten(), nn.Linear(width, f)) if first else nn.Linear(width, f)
        stages.append((f"fc{i}", layer, _relu()))
        width = f
    stages.append(("logits", nn.Linear(width, num_classes), nn.Identity()))
    return stages


def _fcnn(widths: tuple[int, int]) -> Callable[[Shape, int, str], list]:
    def build_stages(input_shape: Shape, num_classes: int, padding: str) -> list:
        n0 = input_shape[0] * input_shape[1] * input_shape[2]
        w1, w2 = widths
        return [
            ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(n0, w1)), _relu()),
            ("fc2", nn.Linear(w1, w2), _relu()),
            ("logits", nn.Linear(w2, num_classes), nn.Identity()),
        ]
    return build_stages


def _cnn4(input_shape: Shape, num_classes: int, padding: str) -> list:
    # Paper 002 App. E: conv-BN-ReLU-maxpool twice, FC 500, logits (VALID convolutions, as LeNet).
    c, h, w = input_shape
    conv1 = nn.Sequential(nn.Conv2d(c, 20, 5), nn.BatchNorm2d(20))
    conv2 = nn.Sequential(nn.Conv2d(20, 50, 5), nn.BatchNorm2d(50))
    side_h, side_w = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    return [
        ("conv1", conv1, nn.Sequential(_relu(), nn.MaxPool2d(2))),
        ("conv2", conv2, nn.Sequential(_relu(), nn.MaxPool2d(2))),
        ("fc3", nn.Sequential(nn.Flatten(), nn.Linear(50 * side_h * side_w, 500)), _relu()),
        ("logits", nn.Linear(500, num_classes), nn.Identity()),
    ]


def _small(input_shape: Shape, num_classes: int, padding: str) -> list:
    return _conv_stack(input_shape, num_classes, padding, [(16, 4, 2), (32, 4, 1)], [100])


def _medium(input_shape: Shape, num_classes: int, padding: str) -> list:
    return _conv_stack(input_shape, num_classes, padding,
                       [(32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2)], [512, 512])


def _large(input_shape: Shape, num_classes: int, padding: str) -> list:
    return _conv_stack(input_shape, num_classes, padding,
                       [(64, 3, 1), (64, 3, 1), (128, 3, 2), (128, 3, 1), (128, 3, 1)], [200])


# The registry: adding an architecture is one entry.
ARCHITECTURES: dict[str, Callable[[Shape, int, str], list]] = {
    "fcnn": _fcnn((300, 200)),
    "fcnn_small": _fcnn((150, 100)),
    "fcnn_smaller": _fcnn((75, 50)),
    "cnn4": _cnn4,
    "small": _small,
    "medium": _medium,
    "large": _large,
}

PADDINGS = ("same", "valid")


def build(arch: str, input_shape: Shape, num_classes: int, padding: str = "same") -> TappedNet:
    """Build a registered architecture for inputs of shape (C, H, W)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHITECTURES)}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), not {input_shape}")
    return TappedNet(arch, input_shape, num_classes, padding, ARCHITECTURES[arch](input_shape, num_classes, padding))
