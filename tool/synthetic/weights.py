"""A stand-in for pretrained backbone weights where none are available (synthetic runs).

Without an ImageNet file the backbone keeps the original's N(0, 0.001^2) convolution weights.
From that start, on the synthetic tree, float32 gradients reach 1.8e4 inside the backbone, and
under float16 autocast (measured with the CPU's) dozens of backbone gradients overflow even
without loss scaling, so every AMP step would be skipped; a warm-started run does not start
there.  With He-normal weights (torchvision's ResNet initialisation) the backbone's largest
gradient is about 1.9e3 and only the two weight gradients summed over every pixel (the first
convolution of the backbone and of Pose2Feat, up to 1.3e4) stay large.
"""
from torch import nn


def he_initialise_convolutions_(module):
    """Re-draw every ``Conv2d`` weight of ``module`` in place from He-normal (fan-out, ReLU),
    as torchvision initialises a ResNet; returns ``module``.  Optimizers holding the
    parameters keep working (same tensors)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
    return module
