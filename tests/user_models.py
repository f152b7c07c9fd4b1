"""A user's own model factory, as a practitioner would write it (not a flipsearch FlipNet)."""

from torch import nn


def tiny_mlp(num_classes, input_shape):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))


def one_argument(num_classes):
    """A factory that takes the class count only (called as factory(num_classes))."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def buggy(num_classes, input_shape):
    """A factory with a bug of its own that raises TypeError inside it: its error must show,
    not be mistaken for the one-argument form and retried."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes), nn.ReLU(inplace="yes", negative=True))
