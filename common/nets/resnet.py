"""Split ResNet backbone of SGRE (docs/METHOD.md, "Network").

The stem (conv1, bn1, relu, maxpool) and the four residual stages are run in two
calls so that Pose2Feat can fuse the joint heatmaps into the stem feature:

    early = backbone(img)                       # (B, 3, 256, 256) -> (B, 64, 64, 64)
    deep = backbone(fused, skip_early=True)     # (B, 64, 64, 64)  -> (B, 2048, 8, 8)

Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` ...), so torchvision ImageNet files and the released
SGRE checkpoints load without renaming.
"""
import logging
import os

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

logger = logging.getLogger(__name__)

# depth -> blocks per stage; only the Bottleneck depths give the 2048 channels the heads need.
RESNET_SPECS = {
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}

IMAGENET_HINT = (
    "Set cfg.imagenet_weights to a local torchvision-format ResNet state_dict, e.g. "
    "resnet50-19c8e357.pth (the file the original downloaded; it is available from "
    "https://download.pytorch.org/models/resnet50-19c8e357.pth or via "
    "torchvision.models.resnet50(weights=...) on a machine with network access), "
    "or leave it None to keep the random initialisation.")

_warned_no_imagenet = False


def _warn_no_imagenet_once():
    global _warned_no_imagenet
    if not _warned_no_imagenet:
        logger.warning("No ImageNet weights file (cfg.imagenet_weights is None): the backbone keeps "
                       "its N(0, 0.001^2) initialisation.")
        _warned_no_imagenet = True


class ResNetBackbone(nn.Module):
    """torchvision-style ResNet-50/101/152 without avgpool and fc, run in two parts.

    ``resnet_type`` must be 50, 101 or 152 (ValueError otherwise).
    """

    def __init__(self, resnet_type=50):
        super().__init__()
        if resnet_type not in RESNET_SPECS:
            raise ValueError(
                f"resnet_type={resnet_type!r} is not supported: SGRE's heads need the 2048-channel "
                f"output of a Bottleneck ResNet, so use one of {sorted(RESNET_SPECS)} "
                "(cfg.resnet_type).")
        self.resnet_type = resnet_type
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks = RESNET_SPECS[resnet_type]
        self.layer1 = self._make_layer(64, blocks[0], stride=1)
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], stride=2)
        self.layer4 = self._make_layer(512, blocks[3], stride=2)
        self.out_channels = 512 * Bottleneck.expansion
        self.reset_parameters()

    def _make_layer(self, planes, num_blocks, stride):
        """One stage; the first block carries the 1x1 strided downsample (conv, BN)."""
        out_planes = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def reset_parameters(self):
        """The original's constructor init: conv weights N(0, 0.001^2), BN weight 1 / bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.001)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x, skip_early=False):
        """``skip_early=False``: image (B,3,H,W) -> stem feature (B,64,H/4,W/4).
        ``skip_early=True``: stem-resolution feature (B,64,h,w) -> (B,2048,h/8,w/8)."""
        if not skip_early:
            return self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def init_weights(self, weights_path):
        """Load ImageNet weights from a local torchvision-format file (never downloads).

        ``weights_path`` None: one warning is logged per process and the constructor's
        initialisation is kept.  The file's ``fc.*`` entries are dropped and the rest must
        match exactly (strict load).  Returns True when weights were loaded.
        """
        if weights_path is None:
            _warn_no_imagenet_once()
            return False
        weights_path = os.fspath(weights_path)
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(
                f"ImageNet weights file not found: {weights_path} (cfg.imagenet_weights). "
                + IMAGENET_HINT)
        state = torch.load(weights_path, map_location='cpu', weights_only=True)
        if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
            state = state['state_dict']
        state = {k: v for k, v in state.items() if not k.startswith('fc.')}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise RuntimeError(
                f"{weights_path} is not a torchvision ResNet-{self.resnet_type} state_dict "
                f"(cfg.imagenet_weights): {err}") from err
        logger.info("Loaded ImageNet backbone weights from %s", weights_path)
        return True
