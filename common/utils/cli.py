"""Command-line glue shared by the entry scripts: ``--gpu`` parsing, argument checks,
the ``--cfg`` YAML, joining a torchrun job (one experiment folder per job), and turning
expected errors into one line.

This is the only module under ``common/utils`` that reads the configuration: it sits at
the edge, between the command line and ``cfg``.
"""
import argparse
import os
import sys

from common.utils.device import parse_gpu_ids
from main.config import cfg


def gpu_ids_arg(text):
    """argparse type of ``--gpu``: '0', '0,1' or '0-3' (normalised to a comma list)."""
    try:
        return parse_gpu_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def require_gpu_outside_torchrun(parser, args):
    """``--gpu`` is required unless torchrun started the process."""
    from common.utils.distributed import launched_by_torchrun
    if args.gpu_ids is None and not launched_by_torchrun():
        parser.error('the following arguments are required: --gpu (or start the script with torchrun)')


def check_args(parser, args):
    """Checks shared by train.py and test.py: ``--gpu`` outside torchrun, ``--exp_dir`` and
    ``--cfg`` exist.  A failure exits with a usage message."""
    require_gpu_outside_torchrun(parser, args)
    if args.exp_dir and not os.path.isdir(args.exp_dir):
        parser.error(f'--exp_dir {args.exp_dir}: no such folder.')
    if args.cfg and not os.path.isfile(args.cfg):
        parser.error(f'--cfg {args.cfg}: no such file.')
    return args


def apply_cfg_file(path):
    """``cfg.update(path)`` if a ``--cfg`` file was given; a bad key ends the run with its message."""
    if not path:
        return
    try:
        cfg.update(path)
    except ValueError as exc:
        raise SystemExit(f'ERROR{rank_tag()}: --cfg {path}: {exc}') from exc


def init_distributed_from_env(gpu_ids):
    """Under torchrun: pick this process's device from ``gpu_ids`` (None: ``LOCAL_RANK``)
    and join the process group.  Returns the ``--gpu`` string the run records
    (the node's ids; ``gpu_ids`` unchanged outside torchrun)."""
    from common.utils import distributed as dist_utils
    from common.utils.device import select_rank_device
    info = dist_utils.env_info()
    if info is None:
        return gpu_ids
    if not gpu_ids:
        gpu_ids = ','.join(str(i) for i in range(info.local_world_size))
    setup = select_rank_device(gpu_ids, info.local_rank)
    dist_utils.init_distributed(setup.device)
    return gpu_ids


def join_job(gpu_ids):
    """Under torchrun: choose this process's device and join the process group (a bad
    ``--gpu`` list ends the run with its message).  Returns the ``--gpu`` string to record."""
    try:
        return init_distributed_from_env(gpu_ids)
    except ValueError as exc:
        raise SystemExit(f'ERROR{rank_tag()}: {exc}') from exc


def make_shared_run_dirs():
    """``cfg.make_run_dirs()`` for every process of a job: rank 0 claims the experiment
    folder, the others receive its path (one folder per job); returns ``cfg.output_dir``."""
    from common.utils import distributed as dist_utils
    if dist_utils.is_main_process():
        cfg.make_run_dirs()
    cfg.output_dir = dist_utils.broadcast_object(cfg.output_dir)
    return cfg.make_run_dirs()


def rank_tag():
    """``' [rank r/N]'`` inside a torchrun job, else ``''`` (for error messages)."""
    from common.utils.distributed import env_info
    try:
        info = env_info()
    except ValueError:
        return ''
    return f' [rank {info.rank}/{info.world_size}]' if info else ''


def exit_on_expected_errors(main, argv, expected):
    """Run ``main(argv)``; an exception of the ``expected`` types ends the process with
    ``ERROR: <message>`` and exit status 1 instead of a traceback."""
    try:
        return main(argv)
    except expected as exc:
        sys.exit(f'ERROR{rank_tag()}: {exc}')
