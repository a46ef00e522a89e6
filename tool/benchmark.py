"""Timing benchmark of SGRE on the current device.

    python tool/benchmark.py [--mode model] [--batch 8] [--runs 10] [--warmup 3] [--smpl DIR]

``--mode model`` times, for the whole model and for the heads alone (backbone and
Pose2Feat replaced by a cached feature map): the training step (forward + loss +
backward, no optimizer step) and the test forward (eval mode, no gradient).  Each
number is the median over ``--runs`` runs after ``--warmup`` runs.  The table is
printed and written as JSON (ARCHITECTURE.md):
``{"device", "torch", "batch", "results": {name: {"median_ms", "min_ms", "max_ms", "runs"}}}``.

``--mode data`` times ``__getitem__`` of each of the five loaders (one process, one
thread, seeded draws) on the synthetic tree (or on ``--data DIR``); the numbers are ms
per sample.

Without the real SMPL files (``--smpl``, default ``cfg.smpl_model_dir``) a synthetic
body model is generated into a temporary folder; timings do not depend on its values.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from main.config import cfg  # noqa: E402

# The authors' implementation on a 2-core CPU at batch 8 (issue text), for orientation only.
AUTHORS_CPU_B8_MS = {
    'train_step': '1400-1500',
    'heads_train_step': '110-130',
    'heads_test_forward': '36',
}


# ----------------------------------------------------------------------------- timing
def time_callable(fn, runs, warmup, device):
    """Run ``fn`` ``warmup`` times, then time ``runs`` calls; returns the stats dict in ms."""
    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return {'median_ms': statistics.median(times), 'min_ms': min(times), 'max_ms': max(times),
            'runs': runs}


def device_name(device):
    if device.type == 'cuda':
        return f'cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})'
    return f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


# ----------------------------------------------------------------------------- body model
def ensure_body_model(smpl_dir, workdir):
    """Point cfg at a body model: ``smpl_dir`` if it holds the SMPL pkl files, else a synthetic
    one generated into ``workdir``.  Returns a short description of what is used.
    """
    from common.utils.smpl_layer import SMPL_MODEL_FILES
    smpl_dir = Path(smpl_dir or cfg.smpl_model_dir)
    if all((smpl_dir / name).is_file() for name in SMPL_MODEL_FILES.values()):
        cfg.smpl_model_dir = str(smpl_dir)
        if (smpl_dir / 'J_regressor_extra.npy').is_file():
            cfg.data_dir = str(smpl_dir)
        return f'SMPL files in {smpl_dir}'
    from tool.make_synthetic_smpl import make_synthetic_smpl
    make_synthetic_smpl(workdir, seed=0)
    cfg.smpl_model_dir = cfg.data_dir = str(workdir)
    return f'synthetic body model (no SMPL files in {smpl_dir})'


# ----------------------------------------------------------------------------- model mode
def random_batch(batch, device, seed=0):
    """Inputs / targets / meta_info with the shapes and dtypes of the training loaders."""
    gen = torch.Generator().manual_seed(seed)
    joint_num = 30

    def rand(*shape, scale=1.0):
        return (torch.rand(*shape, generator=gen) * scale).to(device)

    inputs = {'img': rand(batch, 3, *cfg.input_img_shape),
              'joints': rand(batch, joint_num, 2, scale=64.0),
              'joints_mask': torch.ones(batch, joint_num, 1, device=device)}
    targets = {'orig_joint_img': rand(batch, joint_num, 3, scale=64.0),
               'fit_joint_img': rand(batch, joint_num, 3, scale=64.0),
               'orig_joint_cam': rand(batch, joint_num, 3) - 0.5,
               'fit_joint_cam': rand(batch, joint_num, 3) - 0.5,
               'pose_param': rand(batch, 72) - 0.5,
               'shape_param': rand(batch, 10) - 0.5}
    ones = torch.ones(batch, joint_num, 1, device=device)
    meta_info = {'orig_joint_valid': ones, 'orig_joint_trunc': ones, 'fit_joint_trunc': ones,
                 'fit_param_valid': torch.ones(batch, 72, device=device),
                 'is_valid_fit': torch.ones(batch, dtype=torch.float64, device=device),
                 'is_3D': torch.ones(batch, dtype=torch.float64, device=device)}
    return inputs, targets, meta_info


def benchmark_model(args, device):
    """Times of the whole model and of the heads (cached features), train step and test forward."""
    from main.model import get_model
    model = get_model(6890, 30, 'train').to(device)
    inputs, targets, meta_info = random_batch(args.batch, device)
    amp = torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.amp)

    def total_loss(loss):
        return sum(value.mean() for value in loss.values())

    def train_step():
        model.zero_grad(set_to_none=True)
        with amp:
            loss = model(inputs, targets, meta_info, 'train')
        total_loss(loss).backward()

    def test_forward():
        with torch.no_grad(), amp:
            model(inputs, targets, meta_info, 'test')

    model.train()
    with torch.no_grad():
        feat_train = model.extract_features(inputs)
    model.eval()
    with torch.no_grad():
        feat_test = model.extract_features(inputs)

    def heads_train_step():
        model.zero_grad(set_to_none=True)
        with amp:
            loss = model.heads(feat_train, inputs, targets, meta_info, 'train')
        total_loss(loss).backward()

    def heads_test_forward():
        with torch.no_grad(), amp:
            model.heads(feat_test, inputs, targets, meta_info, 'test')

    results = {}
    for name, fn, train in (('train_step', train_step, True), ('test_forward', test_forward, False),
                            ('heads_train_step', heads_train_step, True),
                            ('heads_test_forward', heads_test_forward, False)):
        model.train(train)
        results[name] = time_callable(fn, args.runs, args.warmup, device)
    return results


DATA_LOADERS = (('Human36M', 'train'), ('MuCo', 'train'), ('MSCOCO', 'train'), ('MPII', 'train'),
                ('PW3D', 'test'))
# The authors' loaders on a comparable synthetic tree, ms per sample (issue text, orientation only).
AUTHORS_DATA_MS = {'Human36M': '25', 'MuCo': '67', 'MSCOCO': '25', 'MPII': '25', 'PW3D': '25'}


def ensure_data_tree(data_dir, workdir):
    """Point cfg.data_dir at ``data_dir`` or at a synthetic tree generated into ``workdir``."""
    if data_dir:
        cfg.data_dir = str(data_dir)
        return f'data tree {data_dir}'
    from tool.make_synthetic_data import make_synthetic_data
    root = Path(workdir) / 'data'
    make_synthetic_data(root, cfg.smpl_model_dir, seed=0)
    cfg.data_dir = str(root)
    return f'synthetic data tree in {root}'


def benchmark_data(args, device):
    """ms per ``__getitem__`` of each loader, one process, one thread, seeded draws.

    Each run goes once over the whole (small) dataset; the statistics are per sample.
    """
    import torchvision.transforms as T
    from data.registry import dataset_class
    print(ensure_data_tree(args.data, args.workdir))
    torch.set_num_threads(1)
    cfg.seed = 0
    results = {}
    for name, split in DATA_LOADERS:
        dataset = dataset_class(name)(T.ToTensor(), split)
        count = len(dataset)

        def one_pass(dataset=dataset, count=count):
            for index in range(count):
                dataset[index]

        stats = time_callable(one_pass, args.runs, args.warmup, torch.device('cpu'))
        results[name] = {key: (value / count if key.endswith('_ms') else value) for key, value in stats.items()}
        results[name]['samples'] = count
    return results


MODES = {'model': benchmark_model, 'data': benchmark_data}


# ----------------------------------------------------------------------------- report
def print_table(report, authors=None):
    authors = authors or {}
    print(f"device: {report['device']}   torch {report['torch']}   batch {report['batch']}")
    header = f"{'name':<22}{'median ms':>12}{'min ms':>10}{'max ms':>10}{'runs':>6}"
    if authors:
        header += f"{'authors ms*':>14}"
    print(header)
    for name, row in report['results'].items():
        line = (f"{name:<22}{row['median_ms']:>12.1f}{row['min_ms']:>10.1f}{row['max_ms']:>10.1f}"
                f"{row['runs']:>6}")
        if authors:
            line += f"{authors.get(name, '-'):>14}"
        print(line)
    if authors:
        print('* the authors\' implementation on a 2-core CPU (orientation only)')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mode', choices=sorted(MODES), default='model')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda[:N]' (default: cuda if available)")
    parser.add_argument('--amp', action='store_true', help='float16 autocast (CUDA only)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--smpl', default=None,
                        help='folder of the SMPL pkl files (default cfg.smpl_model_dir)')
    parser.add_argument('--data', default=None,
                        help='data mode: dataset root (default: generate the synthetic tree)')
    parser.add_argument('--out', default=None,
                        help='JSON path (default <output_root>/benchmark/<mode>_b<batch>.json)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.amp and device.type != 'cuda':
        print('--amp is ignored on the CPU')
        args.amp = False
    if args.batch < 2:
        raise SystemExit('--batch must be at least 2 (BatchNorm1d in training mode).')
    with tempfile.TemporaryDirectory(prefix='sgre_bench_') as workdir:
        args.workdir = workdir
        print(ensure_body_model(args.smpl, workdir))
        results = MODES[args.mode](args, device)
    report = {'device': device_name(device), 'torch': torch.__version__, 'batch': args.batch,
              'results': results}
    print_table(report, AUTHORS_CPU_B8_MS if args.mode == 'model' else AUTHORS_DATA_MS)
    out = Path(args.out or Path(cfg.output_root) / 'benchmark' / f'{args.mode}_b{args.batch}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'written {out}')
    return report


if __name__ == '__main__':
    main()
