"""The registered architectures as plain data, and their layer taps and widths without torch.

An architecture is a sequence of hidden layers (`Conv` or `Dense`) followed by the logits. Each hidden
layer is one tap of the network: conv layers are named conv1, conv2, ..., dense layers continue the
count (fc5, fc6 after four convs), the last tap is `logits`. Each hidden tap j also has a
pre-activation tap `<tap>_pre` (its affine part before the ReLU, paper 002's "first linear layer").

`models.build` makes the torch modules from these specs and `tap_widths` computes the widths n_j
from them by shape arithmetic alone, so the workflow plans its grid without building a network.
Adding an architecture is one entry of ARCHITECTURES.

Padding: the IBP reference (Gowal et al. 2019) pads VALID, but paper 001's layer widths fit
padding that keeps 3x3/1 convolutions size-preserving and halves with 4x4/2 ("same", the default);
`padding="valid"` gives the IBP widths. cnn4 (paper 002, App. E) is always VALID, as LeNet.
"""

from __future__ import annotations

from dataclasses import dataclass

PADDINGS = ("same", "valid")


@dataclass(frozen=True)
class Conv:
    """A convolution (then batch norm if asked), ReLU, then max-pooling by `pool` if > 1."""

    channels: int
    kernel: int
    stride: int = 1
    batch_norm: bool = False
    pool: int = 1
    padding: str | None = None   # None: the model's padding; "valid" fixes it


@dataclass(frozen=True)
class Dense:
    """A fully connected layer, then ReLU."""

    width: int


def _fcnn(w1: int, w2: int) -> tuple:
    return (Dense(w1), Dense(w2))


ARCHITECTURES: dict[str, tuple[Conv | Dense, ...]] = {
    # Paper 002, App. E: 300 FC - 200 FC - logits, and the width study at 1/2 and 1/4.
    "fcnn": _fcnn(300, 200),
    "fcnn_small": _fcnn(150, 100),
    "fcnn_smaller": _fcnn(75, 50),
    # Paper 002, App. E: conv-BN-ReLU-maxpool twice, FC 500, logits.
    "cnn4": (Conv(20, 5, batch_norm=True, pool=2, padding="valid"),
             Conv(50, 5, batch_norm=True, pool=2, padding="valid"), Dense(500)),
    # Gowal et al. 2019 (IBP), the models of paper 001.
    "small": (Conv(16, 4, 2), Conv(32, 4, 1), Dense(100)),
    "medium": (Conv(32, 3, 1), Conv(32, 4, 2), Conv(64, 3, 1), Conv(64, 4, 2), Dense(512), Dense(512)),
    "large": (Conv(64, 3, 1), Conv(64, 3, 1), Conv(128, 3, 2), Conv(128, 3, 1), Conv(128, 3, 1), Dense(200)),
}


def layers(arch: str) -> tuple[Conv | Dense, ...]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def tap_names(arch: str) -> list[str]:
    """The taps in network order: conv1.., fc.., logits."""
    names = [f"{'conv' if isinstance(layer, Conv) else 'fc'}{i}" for i, layer in enumerate(layers(arch), start=1)]
    return names + ["logits"]


def weight_layers(arch: str) -> list[int]:
    """Weight layers (conv or linear; batch norm does not count) of each stage, logits last."""
    return [1] * len(layers(arch)) + [1]


def fb_layer_choices(arch: str) -> list[int]:
    """The sizes k that f_b = the last k weight layers can take (paper 003): f_b must start at a
    stage boundary, and f_a and f_b need one stage each."""
    counts = weight_layers(arch)
    return sorted({sum(counts[a:]) for a in range(1, len(counts))})


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output side of a convolution: VALID, or "same" padding as models._conv builds it."""
    if padding == "valid":
        return (size - kernel) // stride + 1
    if stride == 1 and kernel % 2 == 0:
        return size   # padded one more pixel bottom/right (TensorFlow's SAME)
    pad = (kernel - 1) // 2
    return (size + 2 * pad - kernel) // stride + 1


def tap_widths(arch: str, input_shape: tuple[int, ...], num_classes: int, padding: str = "same") -> dict[str, int]:
    """n_j of every tap: the post-activation taps in network order, then the `_pre` taps."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
    c, h, w = (int(s) for s in input_shape)
    names = tap_names(arch)
    post: dict[str, int] = {}
    pre: dict[str, int] = {}
    width = c * h * w
    for name, layer in zip(names, layers(arch)):
        if isinstance(layer, Conv):
            pad = layer.padding or padding
            h = conv_output_size(h, layer.kernel, layer.stride, pad)
            w = conv_output_size(w, layer.kernel, layer.stride, pad)
            c = layer.channels
            pre[f"{name}_pre"] = c * h * w
            h, w = h // layer.pool, w // layer.pool
            width = c * h * w
        else:
            width = layer.width
            pre[f"{name}_pre"] = width
        post[name] = width
    post["logits"] = int(num_classes)
    return {**post, **pre}


def network_order(layers, taps) -> list[str]:
    """`layers` sorted as the network computes them.

    `taps` is the model's ordered tap list (tap_names). A pre-activation tap
    "<tap>_pre" comes just before its tap. Layers the network does not have keep their given
    order, after the others.
    """
    taps = list(taps)
    layers = list(dict.fromkeys(layers))

    def key(layer: str) -> tuple[int, float]:
        if layer in taps:
            return 0, float(taps.index(layer))
        if layer.endswith("_pre") and layer[:-4] in taps:
            return 0, taps.index(layer[:-4]) - 0.5
        return 1, float(layers.index(layer))

    return sorted(layers, key=key)
