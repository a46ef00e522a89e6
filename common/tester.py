"""The test driver: :class:`Tester`.

    tester = Tester(test_epoch)
    tester.make_batch_generator()   # the first evaluation set of cfg.testset and its loader
    tester.make_model()             # snapshot_<test_epoch>, loaded strictly
    summaries = tester.test_all()   # every set of cfg.testset: metrics printed, logged, written
    tester.close()

``cfg.testset`` is one evaluation set or a list (``data.registry.evaluation_names``; with
``cfg.crowd`` a plain ``PW3D`` means ``PW3D-crowd``).  Results go to ``<output_dir>/result/``
(or the tester's ``result_dir``), per set: ``eval_<set>_snapshot_<epoch>.json`` (the
dataset's ``summarize()`` dict) and ``predictions_<set>_snapshot_<epoch>.npz`` (per-sample
SMPL pose and shape, camera translation, sample index; optionally the root-relative meshes),
each written atomically; the set names carry the mode (``PW3D-crowd``, ``PW3D-OC``...).
:meth:`Tester.test_all` adds ``eval_summary_snapshot_<epoch>.txt``, a table of sets x
metrics.  Each evaluated set also adds its metrics to ``<log folder>/metrics.csv``
(``common.utils.run_csv``), and redraws ``training.png`` when that folder holds the
training losses.  When the experiment folder cannot be written (a released, read-only one),
results and the log go to ``<output_root>/eval_<experiment name>/{result,log}/`` instead.  Under torchrun the test batches are dealt out to the ranks
and rank 0 gathers, prints and writes the same results as one process.
(docs/METHOD.md, "Evaluation")
"""
import itertools
import json
import math
import os

import numpy as np
import torch
from tqdm import tqdm

from common.runner import Runner
from common.seeding import seed_worker
from common.trainer import model_dims
from common.utils import checkpoint as ckpt_io
from common.utils import distributed as dist_utils
from common.utils.batch import batch_size_of, split_batch, to_numpy
from common.utils.device import move_to_device
from common.utils import run_csv
from common.utils.files import atomic_write, atomic_write_text
from common.utils.table import format_table
from common.utils.training_figure import write_training_figure
from data.registry import dataset_class, evaluation_names
from main.config import cfg


def json_safe(value):
    """Nested dicts/lists of NumPy/torch scalars and arrays → JSON values (NaN → None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def result_stem(testset, epoch):
    """``<evaluation set>_snapshot_<epoch>``, the set named as ``data.registry.evaluation_names``
    resolves it (``PW3D-crowd``, ``PW3D-OC``, ...), so that the results of different sets of
    one snapshot never overwrite each other."""
    return f'{testset}_snapshot_{int(epoch)}'


def summary_table(summaries):
    """Text table of evaluation sets (rows) x metrics (columns, mm; ``run_csv.summary_metrics``)
    and sample counts from ``{set: summarize() dict}``."""
    per_set = {name: run_csv.summary_metrics(summary) for name, summary in summaries.items()}
    metrics = list(dict.fromkeys(metric for values in per_set.values() for metric in values))
    header = ['evaluation set'] + [f'{m} (mm)' for m in metrics] + ['samples']
    rows = [[name] + [per_set[name].get(m) for m in metrics] + [summary.get('num_samples')]
            for name, summary in summaries.items()]
    return format_table(header, rows)


def eval_fallback_dir(output_root, exp_dir):
    """``<output_root>/eval_<experiment folder name>``: where the evaluation of a read-only
    experiment folder writes its ``log/``, ``result/`` and ``vis/`` (see ``evaluation_output_dir``)."""
    return os.path.join(str(output_root), f'eval_{os.path.basename(os.path.normpath(str(exp_dir)))}')


def evaluation_output_dir(exp_dir, output_root):
    """Where an evaluation of ``exp_dir`` writes its ``log/``, ``result/`` and ``vis/`` (the value
    of ``cfg.eval_output_dir``): ``None`` (inside ``exp_dir``) when all three can be written
    there, else ``eval_fallback_dir``, so that they always stay together.  A subfolder can be
    written when it is a writable folder, or is missing and ``exp_dir`` is writable; nothing is
    created here."""
    def can_write(folder):
        return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)

    def sub_ok(sub):
        path = os.path.join(exp_dir, sub)
        return can_write(path) if os.path.lexists(path) else can_write(exp_dir)

    if all(sub_ok(sub) for sub in ('log', 'result', 'vis')):
        return None
    return eval_fallback_dir(output_root, exp_dir)


def write_results(result_dir, stem, summary, predictions):
    """``<result_dir>/eval_<stem>.json`` (``summary``) and ``predictions_<stem>.npz`` (each
    key's per-batch arrays concatenated), each written atomically; returns both paths."""
    os.makedirs(result_dir, exist_ok=True)
    json_path = os.path.join(result_dir, f'eval_{stem}.json')
    text = json.dumps(json_safe(summary), indent=2)
    atomic_write(json_path, lambda f: f.write(text), binary=False)
    arrays = {k: np.concatenate(v, axis=0) for k, v in predictions.items() if v}
    npz_path = os.path.join(result_dir, f'predictions_{stem}.npz')
    atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    return json_path, npz_path


class Tester(Runner):
    """Test driver: :meth:`make_batch_generator`, :meth:`make_model` (or :meth:`setup` for
    both), then :meth:`test`.

    ``test_epoch`` selects ``<model_dir>/snapshot_<test_epoch>.pth.tar``;
    ``save_meshes`` adds the root-relative meshes to the predictions file;
    ``max_samples`` evaluates only the first N test samples (smoke runs);
    ``result_dir`` / ``log_dir``: where the results and the log go (default: ``cfg``'s, i.e. the
    experiment folder's ``result/`` and ``log/``, or those under ``cfg.eval_output_dir``, which
    ``main/test.py`` sets with ``evaluation_output_dir`` for a read-only experiment).
    """

    log_name = 'test_logs.txt'

    def __init__(self, test_epoch, save_meshes=False, max_samples=None, result_dir=None, log_dir=None):
        log_dir = cfg.log_dir if log_dir is None else log_dir
        super().__init__(log_dir, cfg.gpu_ids, deterministic=cfg.seed is not None)
        self.log_dir = str(log_dir)
        self.testset_names = evaluation_names(cfg.testset, cfg.crowd)
        self.testset_name = self.testset_names[0]
        self.result_dir = str(cfg.result_dir if result_dir is None else result_dir)
        self.test_epoch = int(test_epoch)
        self.save_meshes = bool(save_meshes)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.render = bool(cfg.render)

    # ------------------------------------------------------------ set-up
    def setup(self):
        """:meth:`make_batch_generator`, then :meth:`make_model`."""
        self.make_batch_generator()
        self.make_model()

    def make_batch_generator(self, name=None):
        """Build the evaluation set ``name`` (default: the first of ``cfg.testset``) and its
        loader (whole batches dealt to the ranks under torchrun)."""
        from torchvision import transforms
        self.testset_name = name or self.testset_names[0]
        self.logger.info(f'Creating dataset {self.testset_name}...')
        self.testset = dataset_class(self.testset_name)(transforms.ToTensor(), 'test')
        self.vertex_num, self.joint_num = model_dims(self.testset)
        samples = self.testset
        if self.max_samples is not None:
            samples = torch.utils.data.Subset(self.testset, range(min(self.max_samples, len(self.testset))))
        loader_args = dict(num_workers=cfg.num_thread, pin_memory=self.device_setup.is_cuda,
                           worker_init_fn=seed_worker)
        self.test_batch = self.device_setup.num_devices * cfg.test_batch_size
        if self.distributed:
            # Whole single-process batches dealt out round-robin: identical per-batch results.
            sampler = dist_utils.ShardedBatchSampler(len(samples), self.test_batch,
                                                     self.dist.world_size, self.dist.rank)
            self.batch_ids = sampler.batch_ids()
            self.batch_generator = torch.utils.data.DataLoader(
                dataset=samples, batch_sampler=sampler, **loader_args)
            self.logger.info(f'Test set: {len(samples)} samples in batches of {self.test_batch}, '
                             f'shared by {self.dist.world_size} processes.')
        else:
            self.batch_generator = torch.utils.data.DataLoader(
                dataset=samples, batch_size=self.test_batch, shuffle=False, **loader_args)

    @property
    def checkpoint_path(self):
        return ckpt_io.snapshot_path(cfg.model_dir, self.test_epoch)

    def make_model(self):
        """Build the test-mode model and load ``snapshot_<test_epoch>`` strictly.

        Needs ``vertex_num`` / ``joint_num`` (set by :meth:`make_batch_generator`)."""
        from main.model import get_model
        path = self.checkpoint_path
        if not os.path.isfile(path):
            found = [os.path.basename(p) for _, p in ckpt_io.list_snapshots(cfg.model_dir)]
            raise FileNotFoundError(
                f"Cannot find model at {path} (snapshots there: {', '.join(found) or 'none'}; "
                "pass the experiment folder with --exp_dir and an epoch with --test_epoch).")
        self.logger.info(f'Load checkpoint from {path}')
        self.logger.info('Creating graph...')
        model = get_model(self.vertex_num, self.joint_num, 'test').to(self.device)
        checkpoint = ckpt_io.load_checkpoint_file(path, map_location=self.device)
        ckpt_io.load_network_strict(model, ckpt_io.network_state_of(checkpoint, path), source=path)
        model.eval()
        self.model = model
        # Evaluation needs no gradient synchronisation: under torchrun each rank runs the bare model.
        self.network = model if self.distributed else self.wrap_for_devices(model)
        self.network.eval()

    # Names of the original code base, for code ported from it.
    def _make_batch_generator(self):
        return self.make_batch_generator()

    def _make_model(self):
        return self.make_model()

    # -------------------------------------------------------- evaluation
    def _evaluate(self, outs, cur_sample_idx):
        return self.testset.evaluate(outs, cur_sample_idx)

    def _print_eval_result(self, eval_result):
        self.testset.print_eval_result(eval_result)

    def _summarize(self, eval_result):
        if hasattr(self.testset, 'summarize'):
            return self.testset.summarize(eval_result)
        return {k: float(np.mean(v)) for k, v in eval_result.items() if len(v)}

    def _camera_translation(self, out, meta_info):
        """(B,3) camera translation in metres of a test-mode output dict, computed by the
        model from ``cam_param`` (docs/METHOD.md, "Network")."""
        if 'cam_trans' in out:
            return out['cam_trans']
        return self.model.camera_translation(out['cam_param'], meta_info, render=self.render)

    def test(self, redraw=True):
        """Run the test set; print, log and write the metrics; return ``summarize()``'s dict.
        ``redraw``: redraw ``training.png`` afterwards (``test_all`` does it once for all sets).

        Under torchrun every rank runs its share of the batches and rank 0 gathers, prints
        and writes the results (the same as one process's); other ranks return ``None``.
        """
        records = self._run_batches()
        if self.distributed:
            gathered = dist_utils.gather_objects(records)
            if not self.is_main_process:
                return None
            records = sorted((r for part in gathered for r in part), key=lambda r: r[0])
        eval_result, predictions = self._merge_records(records)
        self._print_eval_result(eval_result)
        summary = self._summarize(eval_result)
        stem = result_stem(self.testset_name, self.test_epoch)
        self.result_paths = write_results(self.result_dir, stem, summary, predictions)
        self.logger.info(f'Metrics ({self.testset_name}): {json.dumps(json_safe(summary))}')
        self.logger.info(f'Wrote {self.result_paths[0]} and {self.result_paths[1]}')
        rows = run_csv.metric_rows(self.test_epoch, self.testset_name, json_safe(summary), self.checkpoint_path)
        run_csv.append_metrics(os.path.join(self.log_dir, run_csv.METRICS_FILE), rows)
        if redraw:
            self.redraw_training_figure()
        return summary

    def redraw_training_figure(self):
        """Redraw ``training.png`` in the log folder when it holds the training losses (a
        figure that fails is only reported)."""
        if os.path.isfile(os.path.join(self.log_dir, run_csv.LOSS_FILE)):
            try:
                write_training_figure(self.log_dir)
            except Exception as exc:  # the picture is a convenience; the CSV holds the data
                self.logger.warning(f'Could not redraw the training figure in {self.log_dir}: {exc}')

    def test_all(self):
        """Evaluate every set of ``cfg.testset`` in turn (:meth:`test` each; the current set
        first, then the others' loaders are built) and write and print the summary table
        ``eval_summary_snapshot_<epoch>.txt``.  Returns ``{set: summarize() dict}`` (``None``
        on ranks other than 0 under torchrun)."""
        summaries = {}
        for name in self.testset_names:
            if name != self.testset_name or not hasattr(self, 'batch_generator'):
                self.make_batch_generator(name)
            summaries[name] = self.test(redraw=False)
        if not self.is_main_process:
            return None
        self.redraw_training_figure()
        table = summary_table(summaries)
        path = os.path.join(self.result_dir, f'eval_summary_snapshot_{self.test_epoch}.txt')
        atomic_write_text(path, f'snapshot: {self.checkpoint_path}\n{table}\n')
        print(table)
        self.logger.info(f'Summary of {len(summaries)} evaluation set(s), written to {path}:\n{table}')
        return summaries

    def _run_batches(self):
        """This process's batches: ``[(batch_id, eval_dict, predictions_dict), ...]``.

        One process runs the loader's batches in order (``batch_id`` counts them); under
        torchrun batch ``k`` of the ``ShardedBatchSampler`` starts at sample ``k*test_batch``.
        """
        records = []
        warned = set()
        batch_ids = self.batch_ids if self.distributed else itertools.count()
        cur_sample_idx = 0
        for batch_id, (inputs, targets, meta_info) in tqdm(zip(batch_ids, self.batch_generator), desc='Test',
                                                           total=len(self.batch_generator),
                                                           disable=not self.is_main_process,
                                                           dynamic_ncols=True):
            batch = batch_size_of(inputs)
            if self.distributed:
                cur_sample_idx = batch_id * self.test_batch
            inputs, targets, meta_info = move_to_device((inputs, targets, meta_info), self.device,
                                                        non_blocking=self.device_setup.is_cuda)
            with torch.no_grad():
                out = self.network(inputs, targets, meta_info, 'test', render=self.render)
                cam_trans = to_numpy(self._camera_translation(out, meta_info))
            out = {k: to_numpy(v) for k, v in out.items()}
            samples, skipped = split_batch(out, batch)
            for key in set(skipped) - warned:
                self.logger.warning(f"Output '{key}' has no per-sample leading dimension; not split.")
                warned.add(key)
            preds = {'smpl_pose': out['smpl_pose'], 'smpl_shape': out['smpl_shape'], 'cam_trans': cam_trans,
                     'sample_idx': np.arange(cur_sample_idx, cur_sample_idx + batch)}
            if 'aid' in out and 'aid' not in skipped:
                preds['aid'] = out['aid']
            if self.save_meshes:
                preds['mesh_cam'] = out['smpl_mesh_cam'].astype(np.float32)
            records.append((batch_id, self._evaluate(samples, cur_sample_idx), preds))
            cur_sample_idx += batch
        return records

    def _merge_records(self, records):
        """Concatenate per-batch records (in batch order) into the evaluation lists and the
        per-key prediction lists."""
        eval_result = {}
        predictions = {'smpl_pose': [], 'smpl_shape': [], 'cam_trans': [], 'sample_idx': []}
        if self.save_meshes:
            predictions['mesh_cam'] = []
        for _, cur_eval, preds in records:
            for key, values in cur_eval.items():
                eval_result.setdefault(key, []).extend(values)
            for key, value in preds.items():
                predictions.setdefault(key, []).append(value)
        return eval_result, predictions
