"""Training and test throughput of SGRE on one device, per autocast dtype.

    python tool/gpu_throughput.py [--batch 128] [--dtypes fp32,fp16,bf16] [--device cuda|cuda:N|cpu]
                                  [--init_scale 1024] [--runs 10] [--warmup 3] [--out FILE]

For each dtype a fresh :class:`common.trainer.Trainer` is built on the synthetic body model and
data tree (generated into a temporary folder; the numbers do not depend on their values), and
two calls are timed on one batch of ``--batch`` real training samples of that tree (drawn
through the datasets' ``__getitem__`` once, collated and pinned as the DataLoader does):

* ``train``: ``Trainer.train_step`` itself: the copy to the device, forward, loss, backward,
  the non-finite checks and the Adam step; ``fp32`` without autocast, ``fp16`` with float16
  autocast and the original's fixed loss scale (GradScaler at ``--init_scale``, default 1024,
  reset every step), ``bf16``
  with bfloat16 autocast and no loss scaling;
* ``test``: the evaluation forward (eval mode, no gradient, same autocast), with the copy.

``skipped_steps`` counts the training calls (warm-up included) whose Adam step GradScaler
skipped for overflowing float16 gradients: their time lacks the optimizer step.

Data loading is not included (``tool/benchmark.py --mode data`` measures it).  Each time is the
median of ``--runs`` calls after ``--warmup`` calls, with ``torch.cuda.synchronize`` around
each; samples/s = batch / median time.  Peak memory is ``torch.cuda.max_memory_allocated``
over the warm-up and the runs (model, Adam state and activations; CUDA only).

Autocast rows run on CUDA only (the trainer runs float32 on the CPU); ``bf16`` also needs a GPU
with bfloat16 support.  Such rows are ``skipped`` with the reason; a row whose run raised is
``failed`` with the error, and the exit status is then 1.  The table is printed and written as
JSON: ``{"device", "torch", "batch", "runs", "warmup", "train": {dtype: row}, "test": {dtype: row}}``
with ``row = {"status": "ok", "median_ms", "min_ms", "max_ms", "samples_per_s", "peak_memory_mb"}``
(train rows also ``"skipped_steps"``) or ``{"status": "skipped" | "failed", "reason"}``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from common.errors import ConfigError  # noqa: E402
from common.utils.cli import add_debug_flag, exit_on_expected_errors  # noqa: E402
from main.config import cfg  # noqa: E402

DTYPES = ('fp32', 'fp16', 'bf16')


def dtype_list(text):
    """argparse type of ``--dtypes``: a comma list of ``DTYPES``."""
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in DTYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--dtypes takes a comma list of {', '.join(DTYPES)}, got '{text}'")
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=128, help='samples per step (default 128, at least 2)')
    parser.add_argument('--dtypes', type=dtype_list, default=list(DTYPES),
                        help=f"comma list of {', '.join(DTYPES)} (default: all)")
    parser.add_argument('--device', default=None,
                        help="'cuda', 'cuda:N' or 'cpu' (default: the first CUDA device, else the CPU)")
    parser.add_argument('--init_scale', type=float, default=1024.0,
                        help="fp16's fixed loss scale (default 1024, the original's)")
    parser.add_argument('--runs', type=int, default=10, help='timed calls per measurement (default 10)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls first (default 3)')
    parser.add_argument('--out', default=None,
                        help='JSON path (default <output_root>/benchmark/gpu_throughput_b<batch>.json)')
    return add_debug_flag(parser).parse_args(argv)


def gpu_ids_for(device_text):
    """The ``--gpu`` string of ``--device`` for the trainer (None: first CUDA device, else CPU).

    ``cpu`` hides the CUDA devices from this process (before torch starts CUDA) so the trainer's
    device choice falls back to the CPU."""
    if device_text in (None, '', 'cuda'):
        return None if device_text in (None, '') else '0'
    if device_text == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
        return None
    if device_text.startswith('cuda:') and device_text[5:].isdigit():
        return device_text[5:]
    raise ConfigError(f"--device {device_text}: use 'cuda', 'cuda:N' or 'cpu'.")


# ----------------------------------------------------------------------------- set-up
def make_synthetic_tree(folder):
    """Synthetic body model and data tree under ``folder``; points ``cfg`` at them and at a
    run folder there.  The dataset mix is the default one (cfg.trainset_3d / trainset_2d)."""
    from tool.synthetic.body_model import make_synthetic_smpl
    from tool.synthetic.tree import make_synthetic_data
    smpl_dir, data_dir = Path(folder) / 'smpl', Path(folder) / 'data'
    make_synthetic_smpl(smpl_dir, seed=0)
    make_synthetic_data(data_dir, smpl_dir, seed=0)
    cfg.smpl_model_dir, cfg.data_dir = str(smpl_dir), str(data_dir)
    cfg.output_root = str(Path(folder) / 'runs')
    cfg.num_thread = 0   # the loader is never iterated: samples are drawn directly


def make_trainer(dtype, init_scale):
    """A set-up Trainer (dataset, model, Adam, scaler) for ``dtype`` in the run folder, its
    backbone He-initialised in place of pretrained weights (``tool/synthetic/weights.py``:
    from the original's tiny initial weights every float16 step would overflow and be skipped)."""
    import torch
    from common.trainer import Trainer
    from tool.synthetic.weights import he_initialise_convolutions_
    amp_dtype = torch.bfloat16 if dtype == 'bf16' else torch.float16
    trainer = Trainer(use_amp=dtype != 'fp32', init_scale=init_scale, amp_dtype=amp_dtype)
    try:
        trainer.setup()
        he_initialise_convolutions_(trainer.model.backbone)
    except BaseException:
        trainer.close()
        raise
    return trainer


def collated_batch(dataset, batch, pin):
    """``batch`` samples of ``dataset`` (cycling through it), collated as the DataLoader does;
    pinned for an asynchronous copy when ``pin`` (the trainer's loader pins on CUDA)."""
    import torch
    samples = [dataset[index % len(dataset)] for index in range(batch)]
    collated = torch.utils.data.default_collate(samples)
    return pinned(collated) if pin else collated


def pinned(value):
    """``value`` (nested dicts/lists/tuples of tensors) with every tensor in pinned memory."""
    import torch
    if torch.is_tensor(value):
        return value.pin_memory()
    if isinstance(value, dict):
        return {key: pinned(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(pinned(item) for item in value)
    return value


def skip_reason(dtype, device):
    """Why ``dtype`` cannot be measured on ``device`` (None: it can)."""
    import torch
    if dtype == 'fp32':
        return None
    if device.type != 'cuda':
        return 'autocast is measured on CUDA only (the trainer runs float32 on the CPU)'
    if dtype == 'bf16' and not torch.cuda.is_bf16_supported():
        return f'{torch.cuda.get_device_name(device)} has no bfloat16 support'
    return None


# ----------------------------------------------------------------------------- timing
def timed_row(fn, batch, runs, warmup, device):
    """Run ``fn`` ``warmup`` times, then time ``runs`` calls (``tool/bench/timing.py``).

    Returns the ``ok`` row: median/min/max ms, samples/s at the median and peak memory (MB,
    ``None`` on the CPU) over all calls."""
    import torch
    from tool.bench.timing import time_callable
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    stats = time_callable(fn, runs, warmup, device)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None
    return {'status': 'ok', 'median_ms': stats['median_ms'], 'min_ms': stats['min_ms'], 'max_ms': stats['max_ms'],
            'samples_per_s': batch / (stats['median_ms'] / 1000.0), 'peak_memory_mb': peak}


def train_call(trainer, batch):
    """One ``Trainer.train_step`` on ``batch``; a skipped step (non-finite loss) is an error,
    since its time would not be a training step's."""
    def step():
        if trainer.train_step(*batch) is None:
            raise RuntimeError('the training step was skipped (non-finite loss or gradient)')
    return step


def optimizer_steps(optimizer):
    """How many steps ``optimizer`` (Adam) has taken: its largest per-parameter step count.
    GradScaler skips the whole ``optimizer.step()`` after an overflow, so this count tells the
    taken steps from the skipped ones."""
    counts = [float(state['step']) for state in optimizer.state.values() if 'step' in state]
    return int(max(counts, default=0))


def eval_call(trainer, batch):
    """The evaluation forward of ``trainer.model`` on ``batch`` with the trainer's autocast."""
    import torch
    from common.utils.device import autocast, move_to_device

    def forward():
        inputs, targets, meta_info = move_to_device(batch, trainer.device, non_blocking=trainer.device_setup.is_cuda)
        with torch.no_grad(), autocast(trainer.device, trainer.use_amp, trainer.amp_dtype):
            return trainer.model(inputs, targets, meta_info, 'test')
    return forward


def measure_dtype(dtype, batch_size, args, batch_cache):
    """``(train_row, test_row)`` of one dtype; a fresh trainer, released afterwards."""
    import torch
    trainer = make_trainer(dtype, args.init_scale)
    try:
        if 'batch' not in batch_cache:
            trainer.begin_epoch(0)
            batch_cache['batch'] = collated_batch(trainer.trainset, batch_size, trainer.device_setup.is_cuda)
        batch = batch_cache['batch']
        trainer.network.train()
        steps_before = optimizer_steps(trainer.optimizer)
        train = timed_row(train_call(trainer, batch), batch_size, args.runs, args.warmup, trainer.device)
        train['skipped_steps'] = args.warmup + args.runs - (optimizer_steps(trainer.optimizer) - steps_before)
        trainer.network.eval()
        test = timed_row(eval_call(trainer, batch), batch_size, args.runs, args.warmup, trainer.device)
        return train, test
    finally:
        trainer.close()
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def failed_row(exc):
    return {'status': 'failed', 'reason': f'{type(exc).__name__}: {" ".join(str(exc).split())}'[:500]}


def device_description(device):
    import platform
    import torch
    if device.type == 'cuda':
        return f'{device} ({torch.cuda.get_device_name(device)})'
    return f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


# ----------------------------------------------------------------------------- report
def format_row(name, dtype, row):
    if row['status'] != 'ok':
        return f"{name:<7}{dtype:<6}{row['status']}: {row['reason']}"
    peak = '-' if row['peak_memory_mb'] is None else f"{row['peak_memory_mb']:.0f}"
    return (f"{name:<7}{dtype:<6}{row['median_ms']:>10.1f}{row['min_ms']:>9.1f}{row['max_ms']:>9.1f}"
            f"{row['samples_per_s']:>12.1f}{peak:>12}{row.get('skipped_steps', '-'):>9}")


def print_report(report):
    print(f"device: {report['device']}   torch {report['torch']}   batch {report['batch']}   "
          f"median of {report['runs']} runs after {report['warmup']}")
    print(f"{'step':<7}{'dtype':<6}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'samples/s':>12}{'peak MB':>12}"
          f"{'skipped':>9}")
    for name in ('train', 'test'):
        for dtype, row in report[name].items():
            print(format_row(name, dtype, row))


def run(args):
    """Measure every requested dtype; returns the report dict (also written to ``args.out``)."""
    import torch
    if args.batch < 2:
        raise ConfigError('--batch must be at least 2 (BatchNorm trains on 2 samples or more).')
    if args.runs < 1 or args.warmup < 0:
        raise ConfigError('--runs must be at least 1 and --warmup at least 0.')
    from common.utils.device import select_device
    gpu_ids = gpu_ids_for(args.device)
    device = select_device(gpu_ids).device   # the device each Trainer will pick
    out = Path(args.out) if args.out else Path(cfg.output_root) / 'benchmark' / f'gpu_throughput_b{args.batch}.json'
    report = {'device': device_description(device), 'torch': torch.__version__, 'batch': args.batch,
              'runs': args.runs, 'warmup': args.warmup, 'train': {}, 'test': {}}
    state = cfg.snapshot()
    try:
        with tempfile.TemporaryDirectory(prefix='sgre_throughput_') as folder:
            cfg.set_args(gpu_ids)
            make_synthetic_tree(folder)
            cfg.train_batch_size = args.batch
            cfg.make_run_dirs(new_only=True)
            batch_cache = {}
            for dtype in args.dtypes:
                reason = skip_reason(dtype, device)
                if reason:
                    report['train'][dtype] = {'status': 'skipped', 'reason': reason}
                    report['test'][dtype] = {'status': 'skipped', 'reason': reason}
                    continue
                try:
                    report['train'][dtype], report['test'][dtype] = measure_dtype(dtype, args.batch, args, batch_cache)
                except Exception as exc:   # noqa: BLE001  (an out-of-memory dtype must not hide the others)
                    report['train'][dtype] = report['test'][dtype] = failed_row(exc)
    finally:
        cfg.restore(state)
    print_report(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'written {out}')
    return report


def main(argv=None):
    """Run from command-line arguments; exit status 1 when a measurement failed."""
    report = run(parse_args(argv))
    failed = [f'{name} {dtype}' for name in ('train', 'test')
              for dtype, row in report[name].items() if row['status'] == 'failed']
    if failed:
        sys.exit(f"ERROR: failed: {', '.join(failed)}")
    return report


def run_cli(argv=None):
    """:func:`main` for the command line: a bad option ends with ``ERROR: <message>``, exit 1."""
    return exit_on_expected_errors(main, argv, ())


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch is imported
    run_cli()
