"""Recover an SMPL mesh for every person in your pictures: one image, a folder of images or a video.

    python main/demo.py [--gpu 0] --img PHOTO_OR_FOLDER_OR_VIDEO --model CHECKPOINT [--pose POSES] [--out DIR]

``--pose`` (see ``common/demo_poses.py``): absent or ``auto``, the built-in estimator (the
optional ``rtmlib`` package with its ONNX files, ``--det_model`` / ``--pose_model`` or
rtmlib's cache); an OpenPose output folder (``<name>_keypoints.json`` per picture); an OpenPose
JSON file (one image); or a COCO keypoint-results file (``--image_id`` picks one image, or for
many pictures ``--coco_images`` maps ids to file names; without it the numeric file stem or
the video frame number is the id).  People are selected and cropped by 3DCrowdNet's demo rules
and run through the network in render mode, ``--batch_size`` people at a time across pictures
(docs/METHOD.md, "Demo").  Written into ``--out`` (default ``<output_root>/demo``), per picture
``<name>`` (image stem, or ``<video stem>_<12-digit frame>``):

* ``<name>_render.jpg``: every mesh over the picture, depth-ordered, one colour per person;
* ``<name>_2dpose.jpg``: the input 2D poses (accepted people in their colour, skipped grey);
* ``<name>_person<k>.obj``: person k's mesh in its render camera (metres);
* ``<name>_smpl.json``: per person the SMPL pose (72, axis-angle), shape (10), camera
  translation (3, metres), bbox and render camera; and the skipped people with the reason;

and for a video ``<video stem>_render.mp4``, the rendered frames (the per-frame ``_2dpose.jpg``
and OBJ files only with ``--video_extras``).  Pictures are drawn with their longer side at most
``--render_max_side`` pixels (default 1920; 0: full size), which bounds memory on very large images.

Body model and regressor folders: ``--smpl_dir`` / ``--data_dir`` beat ``--cfg``, which beats
the ``config`` stored in snapshots of this code base (used where its folders exist), which
beats the defaults.  The checkpoint is loaded strictly.  Runs from the repo root or as
``python demo.py`` from ``main/``.
"""
import os
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from main.config import cfg  # noqa: E402
from common.demo_defaults import AUTO, DEFAULT_BATCH_SIZE, DEFAULT_RENDER_MAX_SIDE  # noqa: E402
from common.utils.cli import add_debug_flag, apply_cfg_file, exit_on_expected_errors, gpu_ids_arg  # noqa: E402
# torch, OpenCV and the model are imported where they are used: --help answers without them.


def int_at_least(minimum):
    """An argparse type: an integer of at least ``minimum`` (a usage error otherwise)."""
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(description='SMPL meshes for every person of an image, a folder of images '
                                                 'or a video.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU id (default: the first CUDA device, else the CPU); without CUDA the CPU is used")
    parser.add_argument('--img', required=True, help='an image, a folder of images or a video file')
    parser.add_argument('--pose', default=AUTO,
                        help="2D poses: 'auto' (default: the built-in rtmlib estimator), an OpenPose output folder, "
                             "an OpenPose JSON file (one image) or a COCO keypoint-results file")
    parser.add_argument('--model', required=True, help='checkpoint (snapshot_N.pth.tar or a released file)')
    parser.add_argument('--out', default=None, help='output folder (default <output_root>/demo)')
    parser.add_argument('--image_id', default=None, help='image_id to use from a COCO-results file (one image)')
    parser.add_argument('--coco_images', default=None,
                        help="COCO-format JSON whose 'images' (id, file_name) map a results file's image_id to "
                             "the pictures by file-name stem")
    parser.add_argument('--det_model', default=None, help="estimator's person-detector ONNX file (YOLOX)")
    parser.add_argument('--pose_model', default=None, help="estimator's pose ONNX file (RTMPose / RTMW)")
    parser.add_argument('--batch_size', type=int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help=f'people per network batch, across pictures (default {DEFAULT_BATCH_SIZE})')
    parser.add_argument('--render_max_side', type=int_at_least(0), default=DEFAULT_RENDER_MAX_SIDE,
                        help=f'longer side of the drawn pictures and video, pixels (default '
                             f'{DEFAULT_RENDER_MAX_SIDE}; 0: full size)')
    parser.add_argument('--video_extras', action='store_true',
                        help="for a video also write each frame's _2dpose.jpg and OBJ files")
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


def build_model(checkpoint, device, source):
    """The test-mode network with the checkpoint loaded strictly, on ``device``, in eval mode."""
    from common.demo import restore_network
    from common.utils.smpl import SMPL
    from main.model import get_model
    smpl = SMPL(cfg.body_model_paths())
    model = get_model(smpl.vertex_num, smpl.joint_num, 'test', human_model=smpl, options=cfg.model_options())
    return restore_network(model, checkpoint, device, source=source)


def check_inputs(args, device):
    """Open the pictures and the poses before any model work (a bad file fails fast).

    Returns ``(input kind, pose source)``; the estimator is loaded here for ``--pose auto``.
    """
    from common.demo_inputs import check_input
    from common.demo_poses import pose_source
    from common.pose_estimator import load_estimator
    kind = check_input(args.img)
    if args.image_id is not None and kind != 'image':
        raise ValueError(f'--image_id picks the entries of one image; --img {args.img} is a {kind}: map a results '
                         'file to its pictures with --coco_images, or by numeric file names / frame numbers.')
    source = pose_source(args.pose, kind, args.img, image_id=args.image_id, coco_images=args.coco_images,
                         make_estimator=lambda: load_estimator(args.det_model, args.pose_model, device))
    return kind, source


def run(args, kind, source, model, out_dir):
    """Run the demo over every picture of ``--img``; returns the first picture's paths (and,
    for a video, ``'video'``: the rendered video's path, and ``'frames'``: the frame count)."""
    from common.demo_inputs import VideoOutput, iter_frames, video_fps
    from common.demo_run import OutputOptions, iter_demo
    video = kind == 'video'
    options = OutputOptions(render_max_side=args.render_max_side, write_obj=not video or args.video_extras,
                            write_pose_image=not video or args.video_extras, checkpoint_path=args.model)
    items = ((frame, source.detections(frame), source.origin(frame)) for frame in iter_frames(args.img))
    writer = VideoOutput(os.path.join(out_dir, f'{Path(args.img).stem}_render.mp4'), video_fps(args.img)) \
        if video else None
    first, count = None, 0
    try:
        for result in iter_demo(items, out_dir, model, cfg.geometry_options(), options,
                                batch_size=args.batch_size):
            first = first or result.paths
            count += 1
            if writer is not None:
                writer.write(result.rendered)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    paths = dict(first or {}, frames=count)
    if writer is not None:
        paths['video'] = writer.close()
        print(f"Wrote {paths['video']} ({count} frames).")
    return paths


def main(argv=None):
    """Run the demo from command-line arguments; returns :func:`run`'s dict."""
    from common.utils import checkpoint as ckpt_io
    args = build_parser().parse_args(argv)
    from common.demo import pick_device
    device = pick_device(args.gpu_ids)
    kind, source = check_inputs(args, device)
    checkpoint = ckpt_io.load_checkpoint_file(args.model, map_location='cpu')
    configure(args, checkpoint)
    out_dir = args.out or os.path.join(cfg.output_root, 'demo')
    model = build_model(checkpoint, device, source=args.model)
    return run(args, kind, source, model, out_dir)


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a bad option, an unreadable image or pose
    file, a checkpoint that does not fit, a missing estimator) end with ``ERROR: <message>`` and
    exit status 1 (``--debug`` keeps the traceback)."""
    from common.utils.checkpoint import CheckpointError
    from common.utils.smpl import SMPLFileError
    exit_on_expected_errors(main, argv, (OSError, ValueError, CheckpointError, SMPLFileError))


if __name__ == '__main__':
    build_parser().parse_args()  # --help and usage errors answer before torch is imported
    run_cli()
