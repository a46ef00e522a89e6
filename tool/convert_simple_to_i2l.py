"""Make the backbone warm start ``tool/snapshot_0.pth.tar``.

Input: the public COCO-trained SimpleBaseline checkpoint
``pose_resnet_50_256x192.pth.tar`` (a ResNet-50 state dict with a deconvolution
head; download it from the SimpleBaseline / human-pose-estimation.pytorch model
zoo).  Output: ``{'network': {'module.backbone.<key>': tensor}, 'epoch': 0}`` with
CPU tensors.  ``python main/train.py --continue --gpu 0`` (without ``--exp_dir``)
loads its backbone keys and skips the pose-head keys.

    python tool/convert_simple_to_i2l.py --src pose_resnet_50_256x192.pth.tar [--out tool/snapshot_0.pth.tar]
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from common.utils.cli import add_debug_flag, exit_on_expected_errors  # noqa: E402

DEFAULT_SRC = 'pose_resnet_50_256x192.pth.tar'
DEFAULT_OUT = os.path.join(ROOT, 'tool', 'snapshot_0.pth.tar')
PREFIX = 'module.backbone.'


def backbone_state(loaded, source):
    """The plain ``{name: tensor}`` of a SimpleBaseline file (bare, ``state_dict``-wrapped or
    ``module.``-prefixed), checked to look like a ResNet."""
    from common.utils.checkpoint import CheckpointError
    state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source} holds no state dict of tensors.")
    state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}
    if 'conv1.weight' not in state or not any(k.startswith('layer4.') for k in state):
        raise CheckpointError(
            f"{source} does not look like the pose-ResNet checkpoint: no 'conv1.weight' / 'layer4.*' keys "
            f"(first keys: {', '.join(list(state)[:5])}).")
    return state


def convert(src, out=DEFAULT_OUT):
    """Convert ``src`` into the warm-start file ``out``; returns the output path."""
    import torch
    from common.utils.checkpoint import load_checkpoint_file, save_checkpoint
    if not os.path.isfile(src):
        raise FileNotFoundError(
            f"{src} not found. Download the COCO-trained SimpleBaseline checkpoint "
            f"pose_resnet_50_256x192.pth.tar (human-pose-estimation.pytorch model zoo) and pass it with --src.")
    state = backbone_state(load_checkpoint_file(src, map_location='cpu'), src)
    network = {PREFIX + key: (value.detach().cpu() if torch.is_tensor(value) else value)
               for key, value in state.items()}
    return save_checkpoint({'network': network, 'epoch': 0}, out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--src', default=DEFAULT_SRC, help=f'SimpleBaseline checkpoint (default ./{DEFAULT_SRC})')
    parser.add_argument('--out', default=DEFAULT_OUT, help='output file (default tool/snapshot_0.pth.tar)')
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    path = convert(args.src, args.out)
    print(f'Wrote {path}')
    return path



def run_cli(argv=None):
    """:func:`main` for the command line: expected errors (a missing or unusable input, a full
    disk) end with ``ERROR: <message>`` and exit status 1 (``--debug``: the traceback)."""
    from common.utils.checkpoint import CheckpointError
    return exit_on_expected_errors(main, argv, (CheckpointError,))


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch is imported
    run_cli()
