"""Train SGRE: ``python main/train.py [--gpu 0] [--amp] [--continue [--exp_dir X]] [--cfg Y.yaml]``.

Without ``--gpu`` the run uses the first CUDA device, or the CPU when there is none.

Several GPUs: ``--gpu 0-3`` (DataParallel, as the original) or, one process per GPU,
``torchrun --nproc_per_node=4 main/train.py [--amp] ...`` (DistributedDataParallel;
``--gpu``, if given, lists the node's GPUs, one per local process).
Runs from the repo root or as ``python train.py`` from ``main/``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from common.utils.cli import (add_debug_flag, apply_cfg_file, check_args, exit_on_expected_errors,  # noqa: E402
                              gpu_ids_arg, join_job, make_shared_run_dirs, remove_run_dirs_on_failure)
from main.config import cfg  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description='Train SGRE.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU ids: '0', '0,1' or the range '0-3' (default: the first CUDA device, "
                             "else the CPU; without CUDA the run uses the CPU).  Under torchrun the "
                             "default is GPU <LOCAL_RANK>; given, local process i uses its i-th id.")
    parser.add_argument('--continue', dest='continue_train', action='store_true',
                        help='resume from --exp_dir, or without it warm-start from tool/snapshot_0.pth.tar')
    parser.add_argument('--exp_dir', type=str, default='',
                        help='experiment folder to resume from (with --continue)')
    parser.add_argument('--amp', dest='use_mixed_precision', action='store_true',
                        help='CUDA autocast (float16) with a GradScaler; ignored on the CPU')
    parser.add_argument('--init_scale', type=float, default=1024.0, help='GradScaler loss scale')
    parser.add_argument('--cfg', type=str, default='', help='YAML file overriding config options')
    return add_debug_flag(parser)


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``); errors exit with a usage message."""
    parser = build_parser()
    return check_args(parser, parser.parse_args(argv))


def main(argv=None, sync_batchnorm_converter=None):
    """Configure, train, and return the finished :class:`common.trainer.Trainer`.

    ``sync_batchnorm_converter`` replaces PyTorch's SyncBatchNorm conversion under torchrun
    with ``sync_bn`` (see :class:`~common.trainer.Trainer`); the command line uses the default.
    """
    args = parse_args(argv)
    gpu_ids = join_job(args.gpu_ids)
    cfg.set_args(gpu_ids, args.continue_train, is_test=False, exp_dir=args.exp_dir)
    apply_cfg_file(args.cfg)
    cfg.validate_training(start_epoch=first_epoch_to_train())

    from common.trainer import Trainer
    from common.utils import distributed
    make_shared_run_dirs(training=True)
    with remove_run_dirs_on_failure(training=True):   # a failed set-up leaves no folder behind
        trainer = Trainer(use_amp=args.use_mixed_precision, init_scale=args.init_scale,
                          sync_batchnorm_converter=sync_batchnorm_converter)
        set_up_or_close(trainer)
    try:
        trainer.train()      # a failure from here on keeps the folder: its log tells what happened
    finally:
        trainer.close()
    distributed.cleanup()  # after success only: a failed rank just exits, torchrun stops the others
    return trainer


def set_up_or_close(runner):
    """``runner.setup()``; on failure the runner is closed (its log file released) and the error raised."""
    try:
        runner.setup()
    except BaseException:
        runner.close()
        raise


def first_epoch_to_train():
    """The epoch training starts at: after the latest snapshot of ``--exp_dir`` when resuming,
    else 0 (the warm start's epoch is checked by the trainer)."""
    if not (cfg.continue_train and cfg.exp_dir):
        return 0
    from common.utils.checkpoint import latest_snapshot
    latest = latest_snapshot(os.path.join(cfg.exp_dir, 'checkpoint'))
    return latest[0] + 1 if latest else 0


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a bad option, a missing file, a checkpoint
    that does not fit, a full disk; ``common.utils.cli.is_expected_error``) end with
    ``ERROR: <message>`` and exit status 1 instead of a traceback (``--debug`` keeps it)."""
    from common.trainer import NonFiniteLossError
    from common.utils.checkpoint import CheckpointError
    from common.utils.distributed import SyncBatchNormUnavailableError
    exit_on_expected_errors(main, argv, (CheckpointError, NonFiniteLossError, SyncBatchNormUnavailableError))


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch is imported
    # record(): under torchrun an unexpected exception's traceback appears in the job's summary.
    from torch.distributed.elastic.multiprocessing.errors import record
    record(run_cli)()
