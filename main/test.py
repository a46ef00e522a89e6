"""Evaluate SGRE: ``python main/test.py [--gpu 0] --exp_dir output/exp_X --test_epoch N [--cfg Y.yaml]``.

Evaluates every set of the ``testset`` option (one name or a list, e.g.
``[PW3D, PW3D-crowd, PW3D-OC, PW3D-PC]``); per set prints the metrics as the original, and
writes ``summarize()``'s result as JSON plus per-sample predictions (``.npz``) to
``<exp_dir>/result/``; then prints and writes a summary table (sets x metrics).  The metrics
are also added to ``<log>/metrics.csv`` (``tool/compare_runs.py`` reads it).
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
from common.errors import ConfigError  # noqa: E402
from common.utils.cli import (add_debug_flag, apply_cfg_file, check_args, exit_on_expected_errors,  # noqa: E402
                              gpu_ids_arg, join_job, make_shared_run_dirs, remove_run_dirs_on_failure)


def build_parser():
    parser = argparse.ArgumentParser(description='Evaluate an SGRE snapshot.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU ids: '0', '0,1' or the range '0-3' (default: the first CUDA device, "
                             "else the CPU; without CUDA the run uses the CPU).  Under torchrun the "
                             "default is GPU <LOCAL_RANK>.")
    parser.add_argument('--test_epoch', type=int, required=True,
                        help='epoch N of <exp_dir>/checkpoint/snapshot_N.pth.tar')
    parser.add_argument('--exp_dir', type=str, default='', help='experiment folder holding checkpoint/')
    parser.add_argument('--cfg', type=str, default='', help='YAML file overriding config options')
    parser.add_argument('--flip', action='store_true',
                        help='accepted for compatibility; flip testing is not implemented (nor was it)')
    parser.add_argument('--save_meshes', action='store_true',
                        help='also store the root-relative meshes (N,6890,3) in the predictions file')
    parser.add_argument('--out_dir', type=str, default='',
                        help='folder for the log/, result/ and vis/ of this evaluation (default: --exp_dir; '
                             'if --exp_dir is not writable: <output_root>/eval_<name of --exp_dir>)')
    return add_debug_flag(parser)


def parse_args(argv=None):
    parser = build_parser()
    return check_args(parser, parser.parse_args(argv))


def main(argv=None):
    """Configure, evaluate, and return the finished :class:`common.tester.Tester`."""
    args = parse_args(argv)
    gpu_ids = join_job(args.gpu_ids)
    if not args.exp_dir:
        raise ConfigError('--exp_dir is required: the experiment folder holding checkpoint/snapshot_N.pth.tar.')
    cfg.set_args(gpu_ids, is_test=True, exp_dir=args.exp_dir)
    apply_cfg_file(args.cfg)
    cfg.eval_output_dir = choose_eval_output_dir(args.out_dir)

    from common.tester import Tester
    from common.utils import distributed
    make_shared_run_dirs(training=False)
    with remove_run_dirs_on_failure(training=False):   # a failed set-up removes the empty folders it made
        tester = Tester(args.test_epoch, save_meshes=args.save_meshes)
        if args.flip and tester.is_main_process:
            tester.logger.warning('--flip is ignored: flip testing is not implemented.')
        try:
            tester.setup()
            tester.test_all()
        finally:
            tester.close()
    distributed.cleanup()
    return tester


def choose_eval_output_dir(out_dir):
    """Where this evaluation writes log/, result/ and vis/ (``cfg.eval_output_dir``): ``out_dir``
    if given, else ``common.tester.evaluation_output_dir`` (inside ``--exp_dir`` when it can be
    written, else ``<output_root>/eval_<name of --exp_dir>``, announced on stderr).  The snapshot
    is always read from ``--exp_dir``."""
    if out_dir:
        return os.path.abspath(out_dir)
    from common.tester import evaluation_output_dir
    fallback = evaluation_output_dir(cfg.output_dir, cfg.output_root)
    if fallback is not None:
        print(f'{cfg.output_dir} is not writable: this evaluation writes its log and results to {fallback} '
              '(choose another folder with --out_dir).', file=sys.stderr)
    return fallback


def run_cli(argv=None):
    """``main`` for the command line: expected failures (a bad option, a missing file, a checkpoint
    that does not fit, a full disk; ``common.utils.cli.is_expected_error``) end with
    ``ERROR: <message>`` and exit status 1 instead of a traceback (``--debug`` keeps it)."""
    from common.utils.checkpoint import CheckpointError
    exit_on_expected_errors(main, argv, (CheckpointError,))


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch is imported
    from torch.distributed.elastic.multiprocessing.errors import record
    record(run_cli)()
