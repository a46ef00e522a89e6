"""Evaluate SGRE: ``python main/test.py --gpu 0 --exp_dir output/exp_X --test_epoch N [--cfg Y.yaml]``.

Prints the metrics as the original, and writes ``summarize()``'s result as JSON
plus per-sample predictions (``.npz``) to ``<exp_dir>/result/``.
Several processes: ``torchrun --nproc_per_node=N main/test.py --exp_dir ... --test_epoch N``
shares the test batches among them; rank 0 gathers and writes the same results.
Runs from the repo root or as ``python test.py`` from ``main/``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from main.config import cfg  # noqa: E402
from common.utils.cli import (apply_cfg_file, check_args, exit_on_expected_errors, gpu_ids_arg,  # noqa: E402
                              join_job, make_shared_run_dirs)


def build_parser():
    parser = argparse.ArgumentParser(description='Evaluate an SGRE snapshot.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU ids: '0', '0,1' or the range '0-3'; without CUDA the run uses the CPU. "
                             "Required, except under torchrun (default: GPU <LOCAL_RANK>).")
    parser.add_argument('--test_epoch', type=int, required=True,
                        help='epoch N of <exp_dir>/checkpoint/snapshot_N.pth.tar')
    parser.add_argument('--exp_dir', type=str, default='', help='experiment folder holding checkpoint/')
    parser.add_argument('--cfg', type=str, default='', help='YAML file overriding config options')
    parser.add_argument('--flip', action='store_true',
                        help='accepted for compatibility; flip testing is not implemented (nor was it)')
    parser.add_argument('--save_meshes', action='store_true',
                        help='also store the root-relative meshes (N,6890,3) in the predictions file')
    return parser


def parse_args(argv=None):
    parser = build_parser()
    return check_args(parser, parser.parse_args(argv))


def main(argv=None):
    """Configure, evaluate, and return the finished :class:`common.tester.Tester`."""
    args = parse_args(argv)
    gpu_ids = join_job(args.gpu_ids)
    cfg.set_args(gpu_ids, is_test=True, exp_dir=args.exp_dir)
    apply_cfg_file(args.cfg)

    from common.tester import Tester
    from common.utils import distributed
    make_shared_run_dirs()
    tester = Tester(args.test_epoch, save_meshes=args.save_meshes)
    if args.flip and tester.is_main_process:
        tester.logger.warning('--flip is ignored: flip testing is not implemented.')
    try:
        tester.setup()
        tester.test()
    finally:
        tester.close()
    distributed.cleanup()
    return tester


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a missing file, a checkpoint that does
    not fit) end with their message and exit status 1 instead of a traceback."""
    from common.utils.checkpoint import CheckpointError
    exit_on_expected_errors(main, argv, (FileNotFoundError, CheckpointError))


if __name__ == '__main__':
    from torch.distributed.elastic.multiprocessing.errors import record
    record(run_cli)()
