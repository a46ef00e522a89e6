"""Command-line glue shared by the entry scripts: ``--gpu`` parsing, argument checks,
the ``--cfg`` YAML, joining a torchrun job (one experiment folder per job), and turning
expected errors into one line.

This is the only module under ``common/utils`` that reads the configuration: it sits at
the edge, between the command line and ``cfg``.
"""
import argparse
import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

from common.errors import ConfigError, UserError
from common.utils.gpu_ids import parse_gpu_ids
from main.config import Config, cfg, remove_created_dirs

# OSErrors a user fixes outside the code (space, quota, permissions, read-only media); other
# OSErrors keep their traceback.
EXPECTED_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def gpu_ids_arg(text):
    """argparse type of ``--gpu``: '0', '0,1' or '0-3' (normalised to a comma list)."""
    try:
        return parse_gpu_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def check_args(parser, args):
    """Checks shared by train.py and test.py: ``--exp_dir`` and ``--cfg`` exist.  A failure
    exits with a usage message.  (No ``--gpu`` means the first CUDA device, else the CPU.)"""
    if args.exp_dir and not os.path.isdir(args.exp_dir):
        parser.error(f'--exp_dir {args.exp_dir}: no such folder.')
    if args.cfg and not os.path.isfile(args.cfg):
        parser.error(f'--cfg {args.cfg}: no such file.')
    return args


def apply_cfg_file(path):
    """``cfg.update(path)`` if a ``--cfg`` file was given.  A bad key or value raises
    :class:`~common.errors.ConfigError` (``--cfg <file>: option ...``); the skipped run-identity
    keys are noted once per job (by rank 0)."""
    if not path:
        return
    from common.utils.distributed import is_main_process
    note = (lambda message: print(message, file=sys.stderr)) if is_main_process() else (lambda message: None)
    try:
        cfg.update(path, log=note)
    except ConfigError as exc:
        raise ConfigError(f'--cfg {exc}') from None


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


def make_shared_run_dirs(training=False):
    """``cfg.make_run_dirs()`` for every process of a job: rank 0 claims the experiment
    folder, the others receive its path (one folder per job); returns ``cfg.output_dir``.

    ``training``: the folder must be new (a run never writes into a folder it did not create);
    otherwise (evaluation) only the folders an evaluation writes are created.  The options are
    validated before anything is created.
    """
    from common.utils import distributed as dist_utils
    if dist_utils.is_main_process():
        cfg.make_run_dirs(new_only=training, evaluation=not training)
    cfg.output_dir = dist_utils.broadcast_object(cfg.output_dir)
    if dist_utils.is_main_process():
        return cfg.output_dir
    return cfg.make_run_dirs(evaluation=not training)


def run_holds_snapshots(output_dir):
    """Whether ``<output_dir>/checkpoint`` holds any file (a snapshot, a resume copy)."""
    folder = Path(output_dir) / 'checkpoint'
    return folder.is_dir() and any(folder.iterdir())


@contextlib.contextmanager
def remove_run_dirs_on_failure(training=False):
    """On an exception inside the block (a run's set-up), undo the folders of this start (rank 0
    only): a training run's new experiment folder goes entirely while it holds no snapshot (its
    log and config.yaml describe only the failed start; the error is on stderr); other folders
    the run created go only while empty.  Folders the run did not create are never touched.
    Wrap only the set-up: a failure during training keeps its folder and log."""
    created = list(Config.created_dirs)
    try:
        yield
    except BaseException:
        from common.utils.distributed import is_main_process
        if is_main_process():
            output_dir = cfg.output_dir
            if (training and output_dir is not None and Path(output_dir) in set(map(Path, created))
                    and not run_holds_snapshots(output_dir)):
                shutil.rmtree(output_dir, ignore_errors=True)
            remove_created_dirs(created)
        raise


def rank_tag():
    """``' [rank r/N]'`` inside a torchrun job, else ``''`` (for error messages)."""
    from common.utils.distributed import env_info
    try:
        info = env_info()
    except ValueError:
        return ''
    return f' [rank {info.rank}/{info.world_size}]' if info else ''


def is_expected_error(exc, expected=()):
    """Whether ``exc`` ends a run with one line: a :class:`~common.errors.UserError`, one of
    ``expected``, a missing file, or a full disk / missing permission (``EXPECTED_ERRNOS``)."""
    if isinstance(exc, (UserError, FileNotFoundError) + tuple(expected)):
        return True
    return isinstance(exc, OSError) and exc.errno in EXPECTED_ERRNOS


def one_line(exc):
    """The message of ``exc`` on one line (an OSError without its own text gets its path).

    An error re-raised from a DataLoader worker carries the worker's whole traceback as its
    message; the line that matters is the original error's last one."""
    text = str(exc)
    if text.startswith('Caught ') and 'Original Traceback' in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f'{exc.filename}: {text}'
    return ' '.join(text.split())


def exit_on_expected_errors(main, argv, expected=()):
    """Run ``main(argv)``; an expected error (:func:`is_expected_error`) ends the process with
    ``ERROR: <message>`` and exit status 1 instead of a traceback.  With ``--debug`` in
    ``argv`` (default ``sys.argv``) every error keeps its traceback."""
    debug = '--debug' in (sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except Exception as exc:
        if debug or not is_expected_error(exc, expected):
            raise
        sys.exit(f'ERROR{rank_tag()}: {one_line(exc)}')


def add_debug_flag(parser):
    """``--debug``: show the traceback of expected errors too."""
    parser.add_argument('--debug', action='store_true', help='show the full traceback of every error')
    return parser
