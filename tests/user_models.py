"""A user's own model factory, as a practitioner would write it (not a flipsearch FlipNet)."""

from torch import nn


def tiny_mlp(num_classes, input_shape):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))
