"""Train SGRE: ``python main/train.py --gpu 0-0 [--amp] [--continue [--exp_dir X]] [--cfg Y.yaml]``.

Runs from the repo root or as ``python train.py`` from ``main/``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from main.config import cfg, parse_gpu_ids  # noqa: E402


def gpu_ids_arg(text):
    """argparse type of ``--gpu``: '0', '0,1' or '0-3' (normalised to a comma list)."""
    try:
        return parse_gpu_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser():
    parser = argparse.ArgumentParser(description='Train SGRE (MODEL.md §8).')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', required=True,
                        help="GPU ids: '0', '0,1' or the range '0-3'; without CUDA the run uses the CPU.")
    parser.add_argument('--continue', dest='continue_train', action='store_true',
                        help='resume from --exp_dir, or without it warm-start from tool/snapshot_0.pth.tar')
    parser.add_argument('--exp_dir', type=str, default='',
                        help='experiment folder to resume from (with --continue)')
    parser.add_argument('--amp', dest='use_mixed_precision', action='store_true',
                        help='CUDA autocast (float16) with a GradScaler; ignored on the CPU')
    parser.add_argument('--init_scale', type=float, default=1024.0, help='GradScaler loss scale')
    parser.add_argument('--cfg', type=str, default='', help='YAML file overriding config options')
    return parser


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``); errors exit with a usage message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.exp_dir and not os.path.isdir(args.exp_dir):
        parser.error(f'--exp_dir {args.exp_dir}: no such folder.')
    if args.cfg and not os.path.isfile(args.cfg):
        parser.error(f'--cfg {args.cfg}: no such file.')
    return args


def main(argv=None):
    """Configure, train, and return the finished :class:`common.base.Trainer`."""
    args = parse_args(argv)
    cfg.set_args(args.gpu_ids, args.continue_train, is_test=False, exp_dir=args.exp_dir)
    if args.cfg:
        try:
            cfg.update(args.cfg)
        except ValueError as exc:
            raise SystemExit(f'ERROR: --cfg {args.cfg}: {exc}') from exc
    cfg.make_run_dirs()

    from common.base import Trainer
    trainer = Trainer(use_amp=args.use_mixed_precision, init_scale=args.init_scale)
    try:
        trainer._make_batch_generator()
        trainer._make_model()
        trainer.train()
    finally:
        trainer.close()
    return trainer


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a missing file, a checkpoint that does
    not fit) end with their message and exit status 1 instead of a traceback."""
    from common.base import NonFiniteLossError
    from common.utils.checkpoint import CheckpointError
    try:
        main(argv)
    except (FileNotFoundError, CheckpointError, NonFiniteLossError) as exc:
        sys.exit(f'ERROR: {exc}')


if __name__ == '__main__':
    run_cli()
