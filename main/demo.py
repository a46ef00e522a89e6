"""Recover an SMPL mesh for every person in an image from its 2D poses.

    python main/demo.py [--gpu 0] --img IMAGE --pose POSES.json --model CHECKPOINT [--out DIR]

Pose files: the OpenPose JSON format (``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``,
BODY_25, COCO-18 or COCO-17 layout, told apart by length) or the COCO keypoint-results
format (``[{"image_id", "keypoints": [x, y, s] * 17, "score"}, ...]``).  People are selected
and cropped by 3DCrowdNet's demo rules and run through the network in render mode
(docs/METHOD.md, "Demo"; the pipeline itself is ``common/demo.py``).  Written into ``--out``
(default ``<output_root>/demo``):

* ``<stem>_render.jpg``: every mesh over the image, depth-ordered, one colour per person;
* ``<stem>_2dpose.jpg``: the input 2D poses (accepted people in their colour, skipped grey);
* ``<stem>_person<k>.obj``: person k's mesh in its render camera (metres);
* ``<stem>_smpl.json``: per person the SMPL pose (72, axis-angle), shape (10), camera
  translation (3, metres), bbox and render camera; and the skipped people with the reason.

Body model and regressor folders: ``--smpl_dir`` / ``--data_dir`` beat ``--cfg``, which beats
the ``config`` stored in snapshots of this code base (used where its folders exist), which
beats the defaults.  The checkpoint is loaded strictly.  Runs from the repo root or as
``python demo.py`` from ``main/``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from main.config import cfg  # noqa: E402
from common.utils.cli import add_debug_flag, apply_cfg_file, exit_on_expected_errors, gpu_ids_arg  # noqa: E402
# torch, OpenCV and the model are imported where they are used: --help answers without them.


def build_parser():
    parser = argparse.ArgumentParser(description='SMPL meshes for every person of an image from its 2D poses.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU id (default: the first CUDA device, else the CPU); without CUDA the CPU is used")
    parser.add_argument('--img', required=True, help='input image')
    parser.add_argument('--pose', required=True,
                        help='2D poses: OpenPose JSON (BODY_25 / COCO-18) or COCO keypoint results (17 joints)')
    parser.add_argument('--model', required=True, help='checkpoint (snapshot_N.pth.tar or a released file)')
    parser.add_argument('--out', default=None, help='output folder (default <output_root>/demo)')
    parser.add_argument('--image_id', default=None, help='image_id to use from a COCO-results file of many images')
    parser.add_argument('--cfg', default='', help='YAML file overriding config options')
    parser.add_argument('--smpl_dir', default=None, help='folder of the SMPL pkl files (cfg.smpl_model_dir)')
    parser.add_argument('--data_dir', default=None, help='folder holding J_regressor_extra.npy (cfg.data_dir)')
    return add_debug_flag(parser)


def apply_checkpoint_config(checkpoint, log=print):
    """Take ``resnet_type``, ``smpl_model_dir`` and ``data_dir`` from a checkpoint's stored
    config (snapshots of this code base store it; released files do not), folders only where
    they exist.  Returns the names applied."""
    stored = checkpoint.get('config') if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict):
        return []
    applied = []
    if isinstance(stored.get('resnet_type'), int):
        cfg.resnet_type = stored['resnet_type']
        applied.append('resnet_type')
    for key in ('smpl_model_dir', 'data_dir'):
        value = stored.get(key)
        if isinstance(value, str) and os.path.isdir(value):
            setattr(cfg, key, value)
            applied.append(key)
    if applied:
        log(f"Using {', '.join(f'{k}={getattr(cfg, k)}' for k in applied)} from the checkpoint's config.")
    return applied


def configure(args, checkpoint):
    """Settle ``cfg`` in precedence order: defaults < checkpoint config < ``--cfg`` < folder flags."""
    cfg.set_args(args.gpu_ids, is_test=True)
    apply_checkpoint_config(checkpoint)
    apply_cfg_file(args.cfg)
    if args.smpl_dir:
        cfg.smpl_model_dir = args.smpl_dir
    if args.data_dir:
        cfg.data_dir = args.data_dir
    cfg.validate()


def pick_device(gpu_ids):
    """The demo's device from ``--gpu`` (None: the first CUDA device, else the CPU, said once
    on stderr; an id without CUDA: the CPU, with one warning)."""
    from common.demo import warn_stderr
    from common.utils.device import select_device
    setup = select_device(gpu_ids)
    for message in setup.notes:
        print(message, file=sys.stderr)
    for message in setup.warnings:
        warn_stderr(message)
    return setup.device


def build_model(checkpoint, device, source):
    """The test-mode network with the checkpoint loaded strictly, on ``device``, in eval mode."""
    from common.demo import restore_network
    from common.utils.smpl import SMPL
    from main.model import get_model
    smpl = SMPL(cfg.body_model_paths())
    model = get_model(smpl.vertex_num, smpl.joint_num, 'test', human_model=smpl, options=cfg.model_options())
    return restore_network(model, checkpoint, device, source=source)


def main(argv=None):
    """Run the demo from command-line arguments; returns :func:`common.demo.run_demo`'s dict."""
    args = build_parser().parse_args(argv)
    from common.demo import read_pose_file, run_demo
    from common.utils import checkpoint as ckpt_io
    from common.utils.preprocessing import load_img
    load_img(args.img)                                  # unreadable image: fail before any model work
    read_pose_file(args.pose, args.img, args.image_id)  # malformed pose file: likewise
    checkpoint = ckpt_io.load_checkpoint_file(args.model, map_location='cpu')
    configure(args, checkpoint)
    device = pick_device(cfg.gpu_ids)
    out_dir = args.out or os.path.join(cfg.output_root, 'demo')
    model = build_model(checkpoint, device, source=args.model)
    return run_demo(args.img, args.pose, out_dir, model, cfg.geometry_options(), image_id=args.image_id,
                    checkpoint_path=args.model)


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a bad option, an unreadable image or pose
    file, a checkpoint that does not fit) end with ``ERROR: <message>`` and exit status 1
    (``--debug`` keeps the traceback)."""
    from common.utils.checkpoint import CheckpointError
    from common.utils.smpl import SMPLFileError
    exit_on_expected_errors(main, argv, (OSError, ValueError, CheckpointError, SMPLFileError))


if __name__ == '__main__':
    build_parser().parse_args()  # --help and usage errors answer before torch is imported
    run_cli()
