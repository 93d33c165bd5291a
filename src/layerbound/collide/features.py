"""Feature maps f_j as the functions the collision search differentiates, fast on the CPU.

`feature_map` turns a network and a tap into f_j: in eval mode, without parameter gradients, and
on the CPU in the layout and with the kernels that measured fastest for the Jacobian rows of
paper 001's Algorithm 1 (the network's taps themselves are defined in models/registry.py).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .base import Features


# Modules on which a registry network is affine or piecewise linear (ReLU, max-pooling). A registry
# network's forward composes only its modules (models/registry.py).
# (BatchNorm is affine in eval mode, which the search and the certificate always use.)
_PIECEWISE_LINEAR = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.AvgPool2d,
                     torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.Flatten, torch.nn.ZeroPad2d,
                     torch.nn.Identity, torch.nn.Dropout, torch.nn.Sequential, torch.nn.ModuleList)


def piecewise_linear(model: torch.nn.Module) -> bool:
    """Whether `model` is a registry network built only of piecewise-linear modules. On such a map
    a feature that float64 finds constant near a point is constant there exactly (a dead ReLU); on
    any other map (a loaded model, whose forward may call anything; tanh, sigmoid, GELU) it may only
    be rounded to a constant, which the certificate must not take for a collision."""
    from ..models.registry import TappedNet

    return isinstance(model, TappedNet) and all(
        isinstance(module, _PIECEWISE_LINEAR) for name, module in model.named_modules() if name)


def prepare_model(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """Eval mode (BatchNorm running statistics), no parameter gradients, dtype and device set."""
    model = model.eval().to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def float64_map(model: torch.nn.Module, layer: str, device: torch.device) -> Features:
    """f_j of `model` in float64 (its own weights: float32 values are exact in float64), for the
    certificates of collide/certify.py. Converts `model` in place: pass a copy."""
    return feature_map(prepare_model(model, torch.float64, device), layer, device)


def feature_map(net: torch.nn.Module, layer: str, device: torch.device) -> Features:
    """f_j of a prepared network, as the function the collision search differentiates.

    On the CPU a convolutional network runs channels-last (oneDNN's fast layout), converting its
    input inside f so the search's own tensors keep their plain layout: measured about 1.5x faster
    for the Jacobian rows of the Medium CNN on a 2-core CPU. A convolution on a single input channel
    also gets a faster input gradient (`_FoldBackwardConv2d`). Both change `net` in place.
    """
    f = net.extractor(layer).eval()
    if device.type != "cpu" or not any(isinstance(mod, torch.nn.Conv2d) for mod in net.modules()):
        return f
    net.to(memory_format=torch.channels_last)
    for mod in net.modules():
        if _single_input_channel(mod):
            mod.forward = _FoldBackwardConv2d(mod)   # same forward, faster input gradient on the CPU

    def f_channels_last(u: torch.Tensor) -> torch.Tensor:
        return f(u.contiguous(memory_format=torch.channels_last))
    f_channels_last.extractor = f   # the network's stages, for methods that need them (polytope, smoothing)
    return f_channels_last


class Smoothing:
    """The ReLU modules of a feature map, which `softplus(beta)` turns into softplus of sharpness
    beta, log(1 + exp(beta t)) / beta, while active (the merit search's smoothing, merit.py).

    Only nn.ReLU modules are found: a network that calls a functional ReLU, or has other
    activations, has none there (`bool(smoothing)` is False without any, and the search does not
    smooth; with some, only those are smoothed).
    """

    def __init__(self, module: torch.nn.Module):
        self.relus = [mod for mod in module.modules() if isinstance(mod, torch.nn.ReLU)]
        self.active = False

    def __bool__(self) -> bool:
        return bool(self.relus)

    @contextlib.contextmanager
    def softplus(self, beta: float):
        if self.active:
            raise RuntimeError("the ReLUs are smoothed already: one sharpness at a time")
        own = [mod.__dict__.get("forward") for mod in self.relus]   # a forward set on the instance, kept
        for mod in self.relus:
            mod.forward = functools.partial(torch.nn.functional.softplus, beta=beta)
        self.active = True
        try:
            yield
        finally:
            for mod, forward in zip(self.relus, own):
                if forward is None:
                    del mod.forward   # the class's own ReLU again
                else:
                    mod.forward = forward
            self.active = False


def _single_input_channel(mod: torch.nn.Module) -> bool:
    """A zero-padded Conv2d on one channel (the input layer on grayscale images).

    Only there the fold wins: measured 2x faster for 1 input channel, but 1.5-7x slower than
    oneDNN's kernel for 3 or more (col2im over several channels is slow)."""
    return (isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 1 and mod.groups == 1
            and mod.padding_mode == "zeros" and not isinstance(mod.padding, str))


class _FoldBackwardConv2d:
    """The forward of a Conv2d whose input gradient is one matmul and a col2im (F.fold).

    Every Jacobian row of the search ends in the input gradient of the first convolution, and for a
    convolution on one input channel oneDNN's backward-data kernel is slow: measured ~2x slower
    than the matmul and fold, and ~25% of the Jacobian rows of the Medium CNN (1x28x28). The
    forward is the module's own (same values); weight and bias gradients use PyTorch's kernel.
    """

    def __init__(self, conv: torch.nn.Conv2d):
        self.conv = conv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return _ConvFoldBackward.apply(x, c.weight, c.bias, c.stride, c.padding, c.dilation)


class _ConvFoldBackward(torch.autograd.Function):
    generate_vmap_rule = True   # the backward is plain tensor ops, so torch.func.vmap can batch it

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation):
        return torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.stride, ctx.padding, ctx.dilation = inputs
        ctx.input_size = tuple(x.shape[-2:])
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # The transposed convolution as (N HW, out) @ (out, in kh kw), then col2im.
            n, out, h, w = grad.shape
            cols = grad.permute(0, 2, 3, 1).reshape(n * h * w, out) @ weight.reshape(out, -1)
            grad_x = torch.nn.functional.fold(cols.view(n, h * w, -1).transpose(1, 2), ctx.input_size,
                                              weight.shape[-2:], ctx.dilation, ctx.padding, ctx.stride)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, ctx.stride, ctx.padding,
                ctx.dilation, False, [0, 0], 1, [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_w, grad_b, None, None, None

    @staticmethod
    def jvp(ctx, x_t, weight_t, bias_t, *_):
        # Forward mode (collide.closed_form.linear_part on a wide first layer): the product rule.
        x, weight = ctx.saved_tensors
        conv = torch.nn.functional.conv2d
        out = None
        for term in ((conv(x_t, weight, None, ctx.stride, ctx.padding, ctx.dilation) if x_t is not None else None),
                     (conv(x, weight_t, None, ctx.stride, ctx.padding, ctx.dilation) if weight_t is not None else None),
                     (bias_t[:, None, None] if bias_t is not None else None)):
            if term is not None:
                out = term if out is None else out + term
        return out
