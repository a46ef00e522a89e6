"""Timing and operator-count benchmark of SGRE on the current device.

    python tool/benchmark.py [--mode model|data] [--batch 8] [--runs 10] [--warmup 3] [--smpl DIR]
                             [--contiguous-backbone] [--threads N] [--device cpu|cuda] [--amp]

``--mode model`` builds the model (``get_model``) and ``original_model(model)``
(``tool/bench/original_heads.py``): a copy with the same weights whose everything after the
backbone runs operation by operation as the authors' code does (per-joint feature and score
sampling, per-vertex Linear + BatchNorm1d graph layers, the 23 pose branches one after the other,
global -> relative one joint at a time, torchgeometry's masked conversions, smplpytorch's SMPL
layer with its per-joint loops) and whose backbone runs in the contiguous memory format, as the
original's does.  For both it measures the whole training step (forward + loss + backward, no
optimizer step), the whole test forward (eval mode, no gradient), and the same two for the
heads + SMPL alone (everything after the backbone, from a cached feature map).  The calls of
the two models alternate run by run, so a busy machine slows both alike; each time is the
median over ``--runs`` runs after ``--warmup`` runs.  Every measurement also reports the
number of operators one call launches, forward and backward (``count_operators``: PyTorch
profiler on the CPU side; the count is the same on a GPU, where each operator is a kernel
launch).  ``--contiguous-backbone`` adds a copy whose backbone runs in the default contiguous
memory format instead of the model's channels-last.  Before timing, outputs and losses of the
copies are compared with the model's.

Two more rows bound what the heads can gain: the rotation net's training step alone (from the
cached feature and joint positions; the original's rotation net as reference), and
``floor_rotation_net_train_step``, the matrix products that step must run whatever the
implementation (``RotationNetGemmFloor``: the original's shapes and FLOPs, each product one
stacked call, nothing else).  The comparison prints what this model's heads step would take
with a rotation net at that floor.  ``--cpu-clock`` (CPU, ``--threads 1``) times each call by
the calling thread's CPU time, so other processes on a busy machine do not count.

The table is printed and written as JSON:
``{"device", "torch", "batch", "results": {name: {"median_ms", "min_ms", "max_ms", "runs",
"faults", "ops", "compute_ops"}}, "agreement_max_rel_diff": {...}}`` (``faults``: median minor
page faults per call); the reference's rows are named
``reference_<name>``.

``--mode data`` measures data loading at the synthetic tree's small images and at each
dataset's real resolution (``tool/bench/data_loading.py``): the crop before/after, ms per sample of
each train and test loader, and the training stream's samples/s through a DataLoader with 1 and
``--workers`` workers (trees from ``--data`` / ``--data-full`` or generated).

Without the real SMPL files (``--smpl``, default ``cfg.smpl_model_dir``) a synthetic
body model is generated into a temporary folder; timings do not depend on its values.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODE_NAMES = ('model', 'data')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mode', choices=MODE_NAMES, default='model')
    parser.add_argument('--batch', type=int, default=None,
                        help='model mode: batch (default 8); data mode: stream batch (default train_batch_size)')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda[:N]' (default: cuda if available)")
    parser.add_argument('--amp', action='store_true', help='float16 autocast (CUDA only)')
    parser.add_argument('--contiguous-backbone', action='store_true',
                        help="model mode: also time a copy whose backbone runs in the contiguous memory "
                             "format instead of the model's channels-last")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--cpu-clock', action='store_true',
                        help="model mode on the CPU: time by the calling thread's CPU time instead of the "
                             "wall clock; with --threads 1 that is the whole work of a call, and other "
                             "processes on a busy machine do not count")
    parser.add_argument('--smpl', default=None,
                        help='folder of the SMPL pkl files (default cfg.smpl_model_dir)')
    parser.add_argument('--data', default=None,
                        help='data mode: small-image dataset root (default: generate the synthetic tree)')
    parser.add_argument('--data-full', default=None,
                        help='data mode: full-size dataset root (default: generate it with --full-size)')
    parser.add_argument('--sizes', default='small,full', help='data mode: image sizes to measure')
    parser.add_argument('--workers', type=int, default=None,
                        help='data mode: DataLoader workers of the second stream row (default: usable CPUs)')
    parser.add_argument('--stream-batches', type=int, default=2,
                        help='data mode: timed batches per worker of the stream rows')
    parser.add_argument('--gpu-samples-per-s', type=float, default=None,
                        help="data mode: a GPU's training rate (tool/gpu_throughput.py); prints the workers it needs")
    parser.add_argument('--out', default=None,
                        help='JSON path (default <output_root>/benchmark/<mode>_b<batch>.json)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch is imported

import torch  # noqa: E402

from main.config import cfg  # noqa: E402
from tool.bench.original_heads import original_model  # noqa: E402
from tool.bench.timing import time_alternating  # noqa: E402


# Operators that only make a new view or read metadata: no kernel runs for them on a GPU.
VIEW_OPERATORS = frozenset(
    'aten::' + name for name in (
        'view', 'view_as', '_unsafe_view', 'reshape', '_reshape_alias', 'flatten', 'unflatten',
        'select', 'slice', 'narrow', 'transpose', 't', 'permute', 'expand', 'expand_as',
        'unsqueeze', 'squeeze', 'as_strided', 'split', 'split_with_sizes', 'unbind', 'chunk',
        'detach', 'detach_', 'alias', 'lift_fresh', 'empty', 'empty_like', 'new_empty',
        'empty_strided', 'new_empty_strided', 'set_', 'result_type', 'resolve_conj', 'resolve_neg',
        'numpy_T', 'contiguous'))


def count_operators(fn):
    """Operators one call of ``fn`` dispatches, forward and backward, from the PyTorch profiler.

    Counts the top-level ATen operators (those not called from inside another ATen operator),
    which is what the Python code and the autograd engine launch.  Returns
    ``{"ops": all of them, "compute_ops": those that are not views (VIEW_OPERATORS)}``.
    The count is the same on every device, so on a GPU it measures the launch overhead.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [event for event in prof.events() if event.name.startswith('aten::')]

    def top_level(event):
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith('aten::'):
                return False
            parent = parent.cpu_parent
        return True

    top = [event.name for event in events if top_level(event)]
    return {'ops': len(top), 'compute_ops': sum(name not in VIEW_OPERATORS for name in top)}


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
    from tool.synthetic.body_model import make_synthetic_smpl
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


def total_loss(loss):
    return sum(value.mean() for value in loss.values())


class StepFunctions:
    """The four measured calls of one model: whole training step (forward + loss + backward,
    no optimizer step), whole test forward, and the same two for the heads + SMPL alone
    (everything after the backbone, from a cached feature map)."""

    def __init__(self, model, inputs, targets, meta_info, amp):
        self.model, self.inputs, self.targets, self.meta_info, self.amp = model, inputs, targets, meta_info, amp
        model.train()
        with torch.no_grad():
            self.feat_train = model.extract_features(inputs)
            self.joints_train = [out.detach() for out in model.position_net(self.feat_train)]
        model.eval()
        with torch.no_grad():
            self.feat_test = model.extract_features(inputs)

    def train_step(self):
        self.model.zero_grad(set_to_none=True)
        with self.amp:
            loss = self.model(self.inputs, self.targets, self.meta_info, 'train')
        total_loss(loss).backward()

    def test_forward(self):
        with torch.no_grad(), self.amp:
            return self.model(self.inputs, self.targets, self.meta_info, 'test')

    def heads_train_step(self):
        self.model.zero_grad(set_to_none=True)
        with self.amp:
            loss = self.model.heads(self.feat_train, self.inputs, self.targets, self.meta_info, 'train')
        total_loss(loss).backward()

    def rotation_net_train_step(self):
        self.model.zero_grad(set_to_none=True)
        with self.amp:
            outputs = self.model.rotation_net(self.feat_train, *self.joints_train, self.model.parents)
        sum(out.float().sum() for out in outputs).backward()

    def heads_test_forward(self):
        with torch.no_grad(), self.amp:
            return self.model.heads(self.feat_test, self.inputs, self.targets, self.meta_info, 'test')


# name -> (StepFunctions method, module train mode)
MEASUREMENTS = (('heads_train_step', True), ('heads_test_forward', False), ('train_step', True),
                ('test_forward', False), ('rotation_net_train_step', True))


class RotationNetGemmFloor:
    """The matrix products every implementation of the rotation net's training step must run
    (forward and backward, the same shapes and FLOPs as the per-joint reference), alone, each
    in one stacked call: graph layers (forward, weight gradient, input gradient after the first
    layer, adjacency mixing), the shape / camera / root heads, and the pose branches' three
    layers (forward and weight gradients; the graph feature's gradient through the first layer;
    hidden and parent gradients). Nothing else (no element-wise work, no chain order), so its
    time is a lower bound of the rotation net's step on this device.
    """

    def __init__(self, rotation_net, batch, device, dtype=torch.float32):
        graph = rotation_net.graph_block
        branches = rotation_net.pose_branch
        vertices, width = graph[0].vertex_num, graph[0].dim_out
        joints, hidden = len(branches.joint_order), branches.hidden_dim
        gen = torch.Generator().manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

        flat = vertices * width
        self.graph_in = rand(vertices, batch, graph[0].dim_in)
        self.graph_w0 = rand(vertices, graph[0].dim_in, width)
        self.graph_x = rand(vertices, batch, width)
        self.graph_w = rand(vertices, width, width)
        self.adj = rand(vertices, vertices)
        self.graph_layers = 2 * (len(graph) - 1)
        self.flat_feat = rand(batch, flat)
        self.head_w = rand(flat, 10 + 3 + 6)
        self.head_grad = rand(batch, 10 + 3 + 6)
        self.pose_graph_w = rand(joints * hidden, flat)
        self.pose_feat = rand(joints, batch, branches.feature_dim)
        self.pose_feat_w = rand(joints, branches.feature_dim, hidden)
        self.pose_h = rand(joints, batch, hidden)
        self.pose_w2 = rand(joints, hidden, hidden)
        self.pose_w3 = rand(joints, hidden, 6 * 2)  # layer 3 and the parent block of layer 1
        self.pose_grad = rand(batch, joints * hidden)

    def __call__(self):
        x, w = self.graph_x, self.graph_w
        torch.bmm(self.graph_in, self.graph_w0)  # first graph layer: forward
        torch.bmm(self.graph_in.transpose(1, 2), x)  # ... its weight gradient
        mixed = x.reshape(x.shape[0], -1)
        for _ in range(self.graph_layers):  # residual graph layers: forward, weight, input grad
            torch.bmm(x, w), torch.bmm(x.transpose(1, 2), x), torch.bmm(x, w.transpose(1, 2))
        for _ in range(2 * (self.graph_layers + 1)):  # adjacency mixing, forward and backward
            torch.mm(self.adj, mixed)
        feat, grad = self.flat_feat, self.head_grad
        torch.mm(feat, self.head_w), torch.mm(grad.t(), feat), torch.mm(grad, self.head_w.t())
        # pose branches, layer 1: forward, weight gradient, graph feature's gradient
        torch.mm(feat, self.pose_graph_w.t())
        torch.bmm(self.pose_feat, self.pose_feat_w)
        torch.mm(self.pose_grad.t(), feat)
        torch.bmm(self.pose_h.transpose(1, 2), self.pose_feat)
        torch.mm(self.pose_grad, self.pose_graph_w)
        # layers 2 and 3 (and layer 1's parent block): forward, weight and input gradients
        h = self.pose_h
        for weight in (self.pose_w2, self.pose_w3):
            out = torch.bmm(h, weight)
            torch.bmm(h.transpose(1, 2), out), torch.bmm(out, weight.transpose(1, 2))


def max_relative_difference(first, second):
    """Largest |a - b| / max|b| over the tensors of two output dicts with the same keys."""
    worst = 0.0
    for key, value in second.items():
        if torch.is_tensor(value) and value.is_floating_point():
            scale = value.detach().abs().max().clamp_min(1e-12)
            diff = (first[key].detach().double() - value.detach().double()).abs().max()
            worst = max(worst, float(diff / scale))
    return worst


def agreement(models, inputs, targets, meta_info):
    """Test outputs and train-mode losses of each model against the first, in eval mode with
    the same weights (max relative difference)."""
    outputs = {}
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            test = model(inputs, targets, meta_info, 'test')
            train = model(inputs, targets, meta_info, 'train')
        outputs[name] = {**test, **{'loss_' + k: v for k, v in train.items()}}
    base_name = next(iter(models))
    return {name: max_relative_difference(out, outputs[base_name])
            for name, out in outputs.items() if name != base_name}


def benchmark_model(args, device):
    """Time and operator counts of this model and of the reference heads, side by side."""
    from main.model import get_model
    if args.cpu_clock and (device.type != 'cpu' or torch.get_num_threads() != 1):
        raise SystemExit('--cpu-clock needs --device cpu and --threads 1 (other threads\' work would not count).')
    torch.manual_seed(0)
    model = get_model(6890, 30, 'train').to(device)
    models = {'current': model, 'reference': original_model(model)}
    if args.contiguous_backbone:
        models['contiguous'] = copy.deepcopy(model).use_memory_format(torch.contiguous_format)
    batch = random_batch(args.batch, device)
    differences = agreement(models, *batch)
    amp = torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.amp)
    steps = {name: StepFunctions(m, *batch, amp) for name, m in models.items()}

    results = {}
    for measurement, train in MEASUREMENTS:
        for m in models.values():
            m.train(train)
        fns = {name: getattr(step, measurement) for name, step in steps.items()}
        if measurement == 'rotation_net_train_step':
            fns['floor'] = RotationNetGemmFloor(model.rotation_net, args.batch, device)
        clock = time.thread_time if args.cpu_clock else time.perf_counter
        stats = time_alternating(fns, args.runs, args.warmup, device, clock)
        for name, fn in fns.items():
            key = measurement if name == 'current' else f'{name}_{measurement}'
            results[key] = {**stats[name], **count_operators(fn)}
    return results, {'agreement_max_rel_diff': differences}


def benchmark_data(args, device):
    """Data-loading speed at both image sizes (``tool/bench/data_loading.py``)."""
    from tool.bench.data_loading import benchmark_data as run_data_benchmark
    return run_data_benchmark(args)


MODES = dict(zip(MODE_NAMES, (benchmark_model, benchmark_data)))


# ----------------------------------------------------------------------------- report
def _count(value):
    return '-' if value is None else f'{value:.0f}'


def print_table(report, authors=None):
    """Plain table of every result (name, median/min/max ms, runs, operator counts)."""
    authors = authors or {}
    print(f"device: {report['device']}   torch {report['torch']}   batch {report['batch']}")
    header = (f"{'name':<36}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'runs':>6}{'ops':>7}{'compute':>9}"
              f"{'faults':>9}")
    if authors:
        header += f"{'authors ms*':>14}"
    print(header)
    for name, row in report['results'].items():
        line = (f"{name:<36}{row['median_ms']:>11.1f}{row['min_ms']:>9.1f}{row['max_ms']:>9.1f}"
                f"{row['runs']:>6}{row.get('ops', '-'):>7}{row.get('compute_ops', '-'):>9}"
                f"{_count(row.get('faults')):>9}")
        if authors:
            line += f"{authors.get(name, '-'):>14}"
        print(line)
    if authors:
        print("* the authors' loaders on a 2-core CPU, for orientation only")


def print_comparison(report):
    """Before (reference heads) / after (this model) table: time, operators, ratios."""
    results = report['results']
    print('\nreference = the original model (after the backbone operation by operation as the authors\' code: '
          'per-joint sampling, per-vertex graph layers, 23 sequential branches, smplpytorch\'s SMPL, '
          'torchgeometry\'s conversions; contiguous backbone); current = this model; same weights, same batch, '
          'timed alternately; ratio: of the medians, min ratio: of the fastest calls')
    print(f"{'step':<20}{'ref ms':>9}{'cur ms':>9}{'ratio':>7}{'min ratio':>10}{'ref ops':>9}{'cur ops':>9}"
          f"{'ratio':>7}{'ref comp':>10}{'cur comp':>10}{'ratio':>7}")
    for name, _ in MEASUREMENTS:
        cur, ref = results.get(name), results.get('reference_' + name)
        if cur is None or ref is None:
            continue
        print(f"{name:<20}{ref['median_ms']:>9.1f}{cur['median_ms']:>9.1f}"
              f"{cur['median_ms'] / ref['median_ms']:>7.2f}{cur['min_ms'] / ref['min_ms']:>10.2f}"
              f"{ref['ops']:>9}{cur['ops']:>9}"
              f"{cur['ops'] / ref['ops']:>7.2f}{ref['compute_ops']:>10}{cur['compute_ops']:>10}"
              f"{cur['compute_ops'] / ref['compute_ops']:>7.2f}")
    for name, _ in MEASUREMENTS:
        variant = results.get('contiguous_' + name)
        if variant is not None:
            print(f"contiguous backbone, {name}: {variant['median_ms']:.1f} ms "
                  f"(channels-last is {results[name]['median_ms'] / variant['median_ms']:.2f}x of it)")
    floor = results.get('floor_rotation_net_train_step')
    net, heads, ref_heads = (results.get(name) for name in (
        'rotation_net_train_step', 'heads_train_step', 'reference_heads_train_step'))
    if floor and net and heads and ref_heads:
        # this model's heads step with its rotation net replaced by the bare matrix products
        bound = heads['median_ms'] - net['median_ms'] + floor['median_ms']
        print(f"floor: the rotation net's matrix products alone take {floor['median_ms']:.1f} ms; with "
              f"the rest of this model's heads step ({heads['median_ms'] - net['median_ms']:.1f} ms) "
              f"a rotation net at the floor would bring the heads train step to {bound / ref_heads['median_ms']:.2f}x "
              "of the reference on this device")
    for name, diff in report.get('agreement_max_rel_diff', {}).items():
        print(f'outputs and losses of {name} vs current: max relative difference {diff:.2e}')


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.amp and device.type != 'cuda':
        print('--amp is ignored on the CPU')
        args.amp = False
    if args.batch is None:
        args.batch = 8 if args.mode == 'model' else cfg.train_batch_size
    if args.batch is not None and args.batch < 2:
        raise SystemExit('--batch must be at least 2 (BatchNorm1d in training mode).')
    with tempfile.TemporaryDirectory(prefix='sgre_bench_') as workdir:
        args.workdir = workdir
        print(ensure_body_model(args.smpl, workdir))
        results, extra = MODES[args.mode](args, device)
    report = {'device': device_name(device), 'torch': torch.__version__, 'batch': args.batch,
              'results': results, **extra}
    if args.mode == 'data':
        from tool.bench.data_loading import print_data_table
        report['gpu_samples_per_s'] = args.gpu_samples_per_s
        print_data_table(report)
    else:
        print_table(report)
        print_comparison(report)
    out = Path(args.out or Path(cfg.output_root) / 'benchmark' / f'{args.mode}_b{args.batch}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'written {out}')
    return report


if __name__ == '__main__':
    main()
