"""A stand-in for pretrained backbone weights where none are available (synthetic runs).

Without an ImageNet file the backbone keeps the original's N(0, 0.001^2) convolution weights;
from that start the float16 gradients of the backbone overflow even without loss scaling
(every AMP step is skipped), which is not what a warm-started training run sees.  He-normal
weights (torchvision's ResNet initialisation) give activations and gradients of ordinary size.
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
