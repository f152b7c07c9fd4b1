"""Architectures by name (a small registry, in the manner of timm).

Every built-in model is a `FlipNet`: `features` maps images to a flat vector and `head`
is an `nn.Sequential` of fully connected layers ending in the logits. NeuRecover repairs
weights in `head` and caches the output of `features` once, so the split is part of the
contract. A user's own factory (`module.path:callable`) may return any `nn.Module`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

import torch
from torch import nn

from .errors import UsageError


class FlipNet(nn.Module):
    """A model as a feature extractor and a head (`forward(x) = head(features(x))`), so methods can reach the
    head's weights."""

    def __init__(self, features: nn.Module, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def cnn8(num_classes: int, input_shape: tuple[int, int, int]) -> FlipNet:
    """Paper 1's 8-layer CNN: six 3x3 conv layers in three blocks, then two dense layers."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for cin, cout in ((c, 32), (32, 64), (64, 128)):
        layers += _conv(cin, cout) + _conv(cout, cout) + [nn.MaxPool2d(2)]
        h, w = h // 2, w // 2
    features = nn.Sequential(*layers, nn.Flatten())
    head = nn.Sequential(nn.Linear(128 * h * w, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
                         nn.Linear(256, num_classes))
    return FlipNet(features, head)


def small(num_classes: int, input_shape: tuple[int, int, int]) -> FlipNet:
    """A small fast CNN for the embedded 8x8 digits (and smoke tests on any input)."""
    c, h, w = input_shape
    features = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
                             nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten())
    head = nn.Sequential(nn.Linear(32 * 16, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))
    return FlipNet(features, head)


def compact(num_classes: int, input_shape: tuple[int, int, int]) -> FlipNet:
    """A compact CNN for 28x28 grey images (`fashion-mnist-mini`): two 3x3 stride-2 conv
    layers (16, 32 channels, BatchNorm) and a 64-unit dense layer; 0.11 M weights. At 28x28 on
    one CPU thread it trains ~0.25 ms per sample (batch 64), ~4.5x faster than `small` and
    ~24x faster than `cnn8`, so an update on a few thousand images takes seconds."""
    c, h, w = input_shape
    features = nn.Sequential(nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                             nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                             nn.Flatten())
    h, w = (h + 1) // 2, (w + 1) // 2
    h, w = (h + 1) // 2, (w + 1) // 2
    head = nn.Sequential(nn.Linear(32 * h * w, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))
    return FlipNet(features, head)


def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> FlipNet:
    """torchvision's ResNet-18 adapted to small inputs (32x32, 28x28): a 3x3 stride-1 stem
    and no max-pool, as in the CIFAR versions used by MPT."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    fc = net.fc
    net.fc = nn.Identity()
    return FlipNet(nn.Sequential(net, nn.Flatten()), nn.Sequential(fc))


MODELS: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "small": small,
    "cnn8": cnn8,
    "compact": compact,
    "resnet18": resnet18,
}

# A sensible model per built-in dataset when none is named.
DEFAULT_MODEL = {"digits": "small", "fashion-mnist-mini": "compact", "fashion-mnist": "cnn8", "cifar10": "cnn8", "cifar100": "resnet18"}


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int],
                seed: int | None = None) -> nn.Module:
    """A model by registry name or `module.path:factory` (called as factory(num_classes,
    input_shape), or factory(num_classes) when it takes one argument). With `seed`, the
    initial weights depend on nothing else (the global RNG is left as it was)."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(name, num_classes, input_shape)
    if name in MODELS:
        return MODELS[name](num_classes, input_shape)
    if ":" in name:
        factory = load_factory(name)
        args = (num_classes, input_shape) if _takes_input_shape(factory) else (num_classes,)
        try:
            model = factory(*args)
        except Exception as e:  # noqa: BLE001 - the user's own code: show its error, as one line
            text = str(e).strip().splitlines()
            raise UsageError(f"model factory {name!r} raised {type(e).__name__}: {text[0] if text else ''}") from e
        if not isinstance(model, nn.Module):
            raise UsageError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} or give module.path:factory")


def _takes_input_shape(factory: Callable) -> bool:
    """Whether `factory` can be called as factory(num_classes, input_shape) (else it is
    called as factory(num_classes)). Decided from its signature, never by catching a
    TypeError: one raised inside the factory is its own error and must show as such."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature (a builtin, a C extension): the documented form
        return True
    try:
        sig.bind(1, (1, 1, 1))
        return True
    except TypeError:
        return False


def load_factory(spec: str) -> Callable:
    """The user model factory named `module.path:function`; a one-line UsageError when it cannot be imported
    or found."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import model module {module_name!r} ({e}); put it on PYTHONPATH "
                         "(on a cluster: ray job submit --working-dir .)") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"model factory {spec!r} not found: {module_name} has no callable {attr!r}")
    return factory


def expand_outputs(old: nn.Module, new: nn.Module, num_old: int) -> nn.Module:
    """Copy M1's weights into `new` (which has more outputs): every tensor of equal shape is
    copied, and the final layer's first `num_old` rows come from M1 (the class-incremental
    `init: old`)."""
    old_sd, new_sd = old.state_dict(), new.state_dict()
    for k, v in old_sd.items():
        if k not in new_sd:
            continue
        if new_sd[k].shape == v.shape:
            new_sd[k] = v.clone()
        elif new_sd[k].dim() >= 1 and new_sd[k].shape[1:] == v.shape[1:] and v.shape[0] == num_old:
            new_sd[k][:num_old] = v
    new.load_state_dict(new_sd)
    return new
