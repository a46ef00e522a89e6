"""One command from a fresh clone to a trained model: ``python tool/quickstart.py``.

1. Makes (or reuses) the synthetic body model and dataset tree under
   ``output/quickstart/{smpl,data}``.
2. Trains the short schedule of ``main/configs/quickstart.yaml`` on it (a few minutes on a
   2-core CPU), in a new experiment folder under ``output/quickstart/runs``.
3. Evaluates the untrained model (the training run's initial weights, saved in
   ``<exp>/untrained``) and the trained one on the synthetic 3DPW split, and prints
   MPJPE, PA-MPJPE and MPVPE side by side with the paths of the log, checkpoint and results.

4. Writes a rendered overlay of a synthetic 3DPW test image and runs the demo
   (``main/demo.py``) on one synthetic image with an OpenPose JSON, using the checkpoint
   it just trained; the pictures land in ``output/quickstart/demo``.

The run fails (exit status 1) unless the trained MPJPE is at most 0.75 x the untrained one.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from main.config import cfg  # noqa: E402
from common.utils.cli import (add_debug_flag, apply_cfg_file, exit_on_expected_errors, gpu_ids_arg,  # noqa: E402
                              remove_run_dirs_on_failure)

DEFAULT_CONFIG = os.path.join(ROOT, 'main', 'configs', 'quickstart.yaml')
DEFAULT_WORK_DIR = os.path.join(ROOT, 'output', 'quickstart')
LEARNING_RATIO = 0.75
SYNTHETIC_SEED = 0
COMPLETE_MARKER = '.complete'

# Rows of the result table: (label, normalised summarize() key candidates).
METRIC_ROWS = (
    ('MPJPE (mm)', ('mpjpe', 'mpjpefrommesh')),
    ('PA-MPJPE (mm)', ('pampjpe', 'pampjpefrommesh')),
    ('MPVPE (mm)', ('mpvpe', 'mpvpefrommesh')),
)


@dataclass
class QuickstartResult:
    """Everything a later step needs: folders, files and both evaluations' ``summarize()`` dicts."""
    smpl_dir: str
    data_dir: str
    exp_dir: str
    log_path: str
    checkpoint_path: str
    untrained: dict = field(default_factory=dict)
    trained: dict = field(default_factory=dict)
    untrained_result_paths: tuple = ()
    trained_result_paths: tuple = ()
    seconds: dict = field(default_factory=dict)




# ------------------------------------------------------------------ data
def _generate_once(folder, make, regenerate):
    """Run ``make(folder)`` unless a finished earlier run left its marker there."""
    folder = Path(folder)
    if (folder / COMPLETE_MARKER).is_file() and not regenerate:
        return False
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier attempt, or --regenerate
    folder.mkdir(parents=True)
    make(folder)
    (folder / COMPLETE_MARKER).write_text(f'seed {SYNTHETIC_SEED}\n')
    return True


def synthetic_dirs(work_dir):
    """``(smpl_dir, data_dir)``: where the synthetic body model and data tree live under ``work_dir``."""
    return Path(work_dir) / 'smpl', Path(work_dir) / 'data'


def ensure_synthetic_data(work_dir, regenerate=False):
    """``(smpl_dir, data_dir)`` of the synthetic body model and data tree under ``work_dir``."""
    from tool.synthetic.tree import make_synthetic_data
    from tool.synthetic.body_model import make_synthetic_smpl
    smpl_dir, data_dir = synthetic_dirs(work_dir)
    made = _generate_once(smpl_dir, lambda d: make_synthetic_smpl(d, seed=SYNTHETIC_SEED), regenerate)
    print(f"{'Made' if made else 'Reusing'} the synthetic body model in {smpl_dir}")
    made = _generate_once(data_dir, lambda d: make_synthetic_data(d, smpl_dir, seed=SYNTHETIC_SEED),
                          regenerate or made)
    print(f"{'Made' if made else 'Reusing'} the synthetic data tree in {data_dir}")
    return str(smpl_dir), str(data_dir)


# ------------------------------------------------------------------ steps
def configure(args, smpl_dir, data_dir):
    """set_args -> the quickstart YAML -> synthetic paths and overrides (no folders yet);
    every option is checked before anything is trained (a ``ConfigError`` names the bad one)."""
    cfg.set_args(args.gpu_ids, continue_train=False, is_test=False)
    apply_cfg_file(args.cfg)
    cfg.smpl_model_dir = smpl_dir
    cfg.data_dir = data_dir
    cfg.output_root = str(Path(args.work_dir) / 'runs')
    if args.end_epoch is not None:
        cfg.end_epoch = args.end_epoch
        cfg.lr_dec_epoch = [e for e in cfg.lr_dec_epoch if e < args.end_epoch]
    if args.max_iters is not None:
        cfg.max_iters_per_epoch = args.max_iters
    cfg.validate_training()


def save_untrained(trainer, folder):
    """Store the trainer's initial weights as ``<folder>/checkpoint/snapshot_0.pth.tar``."""
    from common.utils import checkpoint as ckpt_io
    path = ckpt_io.snapshot_path(Path(folder) / 'checkpoint', 0)
    ckpt_io.save_checkpoint({'epoch': 0, 'network': ckpt_io.add_module_prefix(trainer.model.state_dict())}, path)
    return path


def evaluate(exp_dir, epoch, max_samples=None):
    """Evaluate ``<exp_dir>/checkpoint/snapshot_<epoch>`` on ``cfg.testset`` (only its first
    ``max_samples`` samples if given): ``(summary, paths)``."""
    from common.tester import Tester
    cfg.output_dir = str(exp_dir)
    cfg.make_run_dirs()
    tester = Tester(epoch, max_samples=max_samples)
    try:
        tester.setup()
        summary = tester.test()
    finally:
        tester.close()
    return summary, tester.result_paths


def train(args):
    """Train on the synthetic tree; returns the finished Trainer and the untrained snapshot's folder."""
    from common.trainer import Trainer
    cfg.make_run_dirs(new_only=True)
    with remove_run_dirs_on_failure(training=True):   # a failed set-up leaves no folder behind
        # One ~0.5 GB snapshot, at the end.
        trainer = Trainer(use_amp=args.amp, snapshot_interval=cfg.end_epoch)
        try:
            trainer.setup()
        except BaseException:
            trainer.close()
            raise
    try:
        untrained_dir = Path(cfg.output_dir) / 'untrained'
        save_untrained(trainer, untrained_dir)
        trainer.train()
    finally:
        trainer.close()
    return trainer, str(untrained_dir)


# ------------------------------------------------------------------ report
def metric(summary, candidates):
    """The value of the first ``summarize()`` key whose normalised name is in ``candidates``."""
    for key, value in summary.items():
        if ''.join(ch for ch in str(key).lower() if ch.isalnum()) in candidates:
            return float(value)
    return float('nan')


def format_table(untrained, trained):
    lines = [f"{'':16}{'untrained':>12}{'trained':>12}"]
    for label, candidates in METRIC_ROWS:
        lines.append(f'{label:16}{metric(untrained, candidates):12.2f}{metric(trained, candidates):12.2f}')
    return '\n'.join(lines)


def learning_ratio(result):
    """Trained MPJPE / untrained MPJPE."""
    mpjpe = METRIC_ROWS[0][1]
    return metric(result.trained, mpjpe) / metric(result.untrained, mpjpe)


# ------------------------------------------------------------------ demo
def run_quickstart_demo(checkpoint_path, data_root, out_dir, smpl_dir=None, gpu_ids=None, log=print):
    """The quickstart's last step, on the synthetic tree at ``data_root``.

    1. renders the meshes of the first synthetic 3DPW test image (test pipeline);
    2. writes that image's OpenPose detections as an OpenPose JSON file and runs the demo on it.
    ``smpl_dir`` defaults to ``cfg.smpl_model_dir``; ``cfg`` is left as it was.
    Returns ``{'pw3d_render', 'openpose_json', 'image', 'command', 'render', 'pose_2d', 'json', 'obj'}``.
    """
    import json
    from common.demo import openpose_json_from_annotations, pick_device, render_test_image, restore_network
    from common.demo_run import run_demo
    from common.utils.checkpoint import load_checkpoint_file
    from common.utils.smpl import SMPL
    from data.PW3D.PW3D import PW3D
    from main.model import get_model
    state = cfg.snapshot()
    try:
        cfg.data_dir = str(data_root)
        if smpl_dir is not None:
            cfg.smpl_model_dir = str(smpl_dir)
        cfg.crowd = False
        cfg.vis = False
        device = pick_device(gpu_ids)
        checkpoint = load_checkpoint_file(checkpoint_path)
        smpl = SMPL(cfg.body_model_paths())
        model = get_model(smpl.vertex_num, smpl.joint_num, 'test', human_model=smpl, options=cfg.model_options())
        model = restore_network(model, checkpoint, device, source=str(checkpoint_path))
        dataset = PW3D(None, 'test')
        first = dataset.datalist[0]
        img_path = first['img_path']
        out_dir = Path(out_dir)
        stem = Path(img_path).stem
        paths = {'image': img_path}
        paths['pw3d_render'] = render_test_image(
            model, dataset, img_path, out_dir / f"pw3d_{first['sequence']}_{stem}_render.jpg", device)

        with open(dataset.annotation_paths()[0]) as f:   # the test split: one file
            db = json.load(f)
        image_ids = {img['id'] for img in db['images']
                     if img['sequence'] == first['sequence'] and img['file_name'] == os.path.basename(img_path)}
        annotations = [a for a in db['annotations'] if a['image_id'] in image_ids]
        paths['openpose_json'] = openpose_json_from_annotations(annotations, out_dir / f'{stem}_keypoints.json')
        paths.update(run_demo(img_path, paths['openpose_json'], out_dir, model, cfg.geometry_options(),
                              checkpoint_path=checkpoint_path, log=log))
        gpu_flag = f'--gpu {gpu_ids} ' if gpu_ids is not None else ''
        paths['command'] = (f"python main/demo.py {gpu_flag}--img {img_path} --pose {paths['openpose_json']} "
                            f"--model {checkpoint_path} --smpl_dir {cfg.smpl_model_dir} --data_dir {cfg.data_dir} "
                            f"--out {out_dir}")
        log(f"Quickstart demo: {paths['pw3d_render']} (3DPW test pipeline) and {paths['render']} "
            f"(demo on {paths['openpose_json']}).")
        return paths
    finally:
        cfg.restore(state)


def quickstart_step(result, args):
    """The last step: :func:`run_quickstart_demo` on the run's checkpoint, written into
    ``<work_dir>/demo``; prints the paths and the demo command."""
    paths = run_quickstart_demo(result.checkpoint_path, result.data_dir, os.path.join(args.work_dir, 'demo'),
                                smpl_dir=result.smpl_dir, gpu_ids=args.gpu_ids)
    print(f"Demo overlay:  {paths['render']}\nDemo command:  {paths['command']}")
    return paths


def build_parser():
    parser = argparse.ArgumentParser(description='Synthetic-data quickstart: make data, train, evaluate.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default=None,
                        help="GPU ids (default: the first CUDA device, else the CPU); without CUDA the CPU is used")
    parser.add_argument('--cfg', default=DEFAULT_CONFIG, help='training schedule (default main/configs/quickstart.yaml)')
    parser.add_argument('--work_dir', default=DEFAULT_WORK_DIR, help='folder for data and runs (default output/quickstart)')
    parser.add_argument('--regenerate', action='store_true', help='remake the synthetic body model and data tree')
    parser.add_argument('--amp', action='store_true', help='CUDA mixed precision (ignored on the CPU)')
    parser.add_argument('--end_epoch', type=int, default=None, help='override the schedule length (smoke runs)')
    parser.add_argument('--max_iters', type=int, default=None, help='override cfg.max_iters_per_epoch (smoke runs)')
    parser.add_argument('--max_test_samples', type=int, default=None, help='evaluate only the first N test samples')
    parser.add_argument('--no_demo', action='store_true', help='skip the demo pictures at the end')
    parser.add_argument('--no_check', action='store_true', help='do not fail when the model did not learn enough')
    return add_debug_flag(parser)


def run_quickstart(argv=None):
    """All steps; returns the :class:`QuickstartResult` and the parsed arguments."""
    args = build_parser().parse_args(argv)
    seconds = {}
    configure(args, *map(str, synthetic_dirs(args.work_dir)))   # a bad option stops before any work
    start = time.time()
    smpl_dir, data_dir = ensure_synthetic_data(args.work_dir, args.regenerate)
    seconds['data'] = time.time() - start

    start = time.time()
    trainer, untrained_dir = train(args)
    seconds['train'] = time.time() - start
    exp_dir = cfg.output_dir
    last_epoch = cfg.end_epoch - 1
    from common.utils.checkpoint import snapshot_path
    checkpoint = snapshot_path(Path(exp_dir) / 'checkpoint', last_epoch)
    log_path = trainer.logger.path

    start = time.time()
    untrained, untrained_paths = evaluate(untrained_dir, 0, args.max_test_samples)
    trained, trained_paths = evaluate(exp_dir, last_epoch, args.max_test_samples)
    cfg.output_dir = exp_dir
    seconds['evaluate'] = time.time() - start

    result = QuickstartResult(smpl_dir, data_dir, exp_dir, log_path, checkpoint, untrained, trained,
                              untrained_paths, trained_paths, seconds)
    print()
    print(f'Synthetic 3DPW split ({cfg.testset}), {cfg.end_epoch} epochs of at most '
          f'{trainer.itr_per_epoch} iterations, batch {cfg.train_batch_size}:')
    print(format_table(untrained, trained))
    print(f'Training log:  {log_path}')
    print(f'Checkpoint:    {checkpoint}')
    print(f'Results:       {trained_paths[0]}')
    print(f'               {trained_paths[1]}')
    print(f'Untrained:     {untrained_paths[0]}')
    print(f"Time: data {seconds['data']:.0f} s, training {seconds['train']:.0f} s, "
          f"evaluation {seconds['evaluate']:.0f} s")
    if not args.no_demo:
        quickstart_step(result, args)
    return result, args


def main(argv=None):
    result, args = run_quickstart(argv)
    ratio = learning_ratio(result)
    verdict = 'OK' if ratio <= LEARNING_RATIO else 'NOT LEARNING ENOUGH'
    print(f'Trained / untrained MPJPE = {ratio:.2f} (must be <= {LEARNING_RATIO}): {verdict}')
    if ratio > LEARNING_RATIO and not args.no_check:
        return 1
    return 0


def run_cli(argv=None):
    """:func:`main` for the command line: expected errors (a bad option in ``--cfg``, a missing
    file, a full disk) end with ``ERROR: <message>`` and exit status 1 (``--debug``: traceback)."""
    return exit_on_expected_errors(main, argv)


if __name__ == '__main__':
    sys.exit(run_cli())
