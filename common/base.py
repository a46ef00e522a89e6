"""Training and test drivers (MODEL.md §8): ``Trainer`` and ``Tester``.

Both pick their device once (``--gpu`` ids, CPU fallback), log in the original's
format to ``<output_dir>/log``, and read or write snapshots through
``common.utils.checkpoint``.  The model is built bare (``self.model``) and wrapped
for multi-device execution in one place (``_wrap_model``); checkpoints always
store the bare model's keys under the ``module.`` prefix of the released files.
Logging that must happen once per job is guarded by ``self.is_main_process``.

Under torchrun (``common.utils.distributed``) every process drives one device: the
trainer wraps the model in DistributedDataParallel (optionally with SyncBatchNorm),
shards each epoch with a seeded ``DistributedShardSampler`` and averages the logged
losses over ranks; the tester deals whole test batches out to the ranks and gathers
the per-batch results on rank 0.  Rank 0 alone logs, shows progress and writes files.

Datasets are imported by class name from ``data/<Name>/<Name>.py``; the model
from ``main/model.py``.  Both imports happen when a run builds them, so this
module imports without them.
"""
import functools
import itertools
import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from common.logger import ColorLogger
from common.nets.layer import set_graph_vectorized
from common.timer import Timer
from common.utils import checkpoint as ckpt_io
from common.utils import distributed as dist_utils
from common.utils.device import (autocast, make_grad_scaler, move_to_device, resolve_amp, select_device,
                                 select_rank_device)
from data.registry import dataset_class
from main.config import DERIVED_KEYS, cfg

OPTIMIZER_MODULES = ('backbone', 'pose2feat', 'position_net', 'rotation_net')
WARM_START_FILE = Path('tool') / 'snapshot_0.pth.tar'


class NonFiniteLossError(RuntimeError):
    """Too many consecutive iterations had a NaN/inf loss; training stopped."""


# ------------------------------------------------------------------ helpers
def derive_seed(seed, *parts):
    """A 32-bit seed determined by ``seed`` and the integer ``parts`` (e.g. an epoch)."""
    return int(np.random.SeedSequence([int(seed), *[int(p) for p in parts]]).generate_state(1)[0])


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's global generators (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_dataset_epoch(dataset, epoch):
    """Call ``set_epoch(epoch)`` on a dataset and on every dataset a mixer wraps."""
    stack, seen = [dataset], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if hasattr(current, 'set_epoch'):
            current.set_epoch(epoch)
        for attr in ('dbs', 'datasets'):
            children = getattr(current, attr, None)
            if isinstance(children, (list, tuple)):
                stack.extend(children)


def seed_worker(cfg_state, worker_id):
    """DataLoader ``worker_init_fn``: the parent's config (so spawned workers see it too)
    and NumPy/Python generators derived from the worker's torch seed."""
    cfg.restore(cfg_state)
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def plain_config():
    """The run's options (derived values excluded) as YAML/pickle-safe plain values.

    The YAML written from it can be passed back with ``--cfg``.
    """
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (np.generic,)):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)
    return {k: plain(v) for k, v in sorted(vars(cfg).items()) if k not in DERIVED_KEYS}


def write_config_yaml(path):
    """Write :func:`plain_config` to ``path`` (the run's resolved configuration)."""
    with open(path, 'w') as f:
        yaml.safe_dump(plain_config(), f, sort_keys=True, default_flow_style=None)
    return path


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


def split_batch(outputs, batch_size):
    """Split a dict of batched NumPy arrays into ``batch_size`` per-sample dicts.

    Only entries whose leading dimension equals ``batch_size`` are split; the names
    of the others are returned so the caller can report them (the original took the
    batch size from the last key, which breaks on such entries).
    """
    samples = [{} for _ in range(batch_size)]
    skipped = []
    for key, value in outputs.items():
        if isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == batch_size:
            for i in range(batch_size):
                samples[i][key] = value[i]
        else:
            skipped.append(key)
    return samples, skipped


def batch_size_of(inputs):
    """Leading dimension of the first tensor in an ``inputs`` dict (``img`` preferred)."""
    if 'img' in inputs and torch.is_tensor(inputs['img']):
        return int(inputs['img'].shape[0])
    for value in inputs.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("Cannot tell the batch size: the inputs hold no batched tensor.")


def chunk_sizes(batch_size, num_devices):
    """Per-device batch sizes the way DataParallel's scatter splits a batch."""
    return [len(c) for c in torch.arange(batch_size).chunk(num_devices)]


def _model_dims(dataset):
    """``(vertex_num, joint_num)`` from a dataset, else from the shared SMPL wrapper."""
    vertex_num = getattr(dataset, 'vertex_num', None)
    joint_num = getattr(dataset, 'joint_num', None)
    if vertex_num is None or joint_num is None:
        from common.utils.smpl import get_smpl
        smpl = get_smpl()
        vertex_num, joint_num = smpl.vertex_num, smpl.joint_num
    return vertex_num, joint_num


def _flat_datasets(dataset):
    """The leaf datasets of a (possibly nested) mixer, in order."""
    children = getattr(dataset, 'dbs', None)
    if isinstance(children, (list, tuple)):
        return [leaf for child in children for leaf in _flat_datasets(child)]
    return [dataset]


def _link_or_copy(src, dst):
    """Put ``src`` at ``dst`` without writing to ``src``'s folder: a hard link where possible."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _to_numpy(value):
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def make_shared_run_dirs():
    """``cfg.make_run_dirs()`` for every process of a job: rank 0 claims the experiment
    folder, the others receive its path (one folder per job); returns ``cfg.output_dir``."""
    if dist_utils.is_main_process():
        cfg.make_run_dirs()
    cfg.output_dir = dist_utils.broadcast_object(cfg.output_dir)
    return cfg.make_run_dirs()


def init_distributed_from_env(gpu_ids):
    """Under torchrun: pick this process's device from ``gpu_ids`` (None: ``LOCAL_RANK``)
    and join the process group.  Returns the ``--gpu`` string the run records
    (the node's ids; ``gpu_ids`` unchanged outside torchrun)."""
    info = dist_utils.env_info()
    if info is None:
        return gpu_ids
    if not gpu_ids:
        gpu_ids = ','.join(str(i) for i in range(info.local_world_size))
    setup = select_rank_device(gpu_ids, info.local_rank)
    dist_utils.init_distributed(setup.device)
    return gpu_ids


# ------------------------------------------------------------------ base
class _Runner:
    """Logger, device and timers shared by Trainer and Tester."""

    log_name = 'train_logs.txt'

    def __init__(self):
        self.distributed = dist_utils.is_distributed()
        self.dist = dist_utils.local_info()
        self.is_main_process = self.dist.is_main
        if self.is_main_process:
            self.logger = ColorLogger(cfg.log_dir, self.log_name, console=True)
        else:
            self.logger = dist_utils.RankLogger(self.dist.rank)
        self.tot_timer = Timer()
        self.gpu_timer = Timer()
        self.read_timer = Timer()
        if self.distributed:
            self.setup = select_rank_device(cfg.gpu_ids, self.dist.local_rank)
        else:
            self.setup = select_device(cfg.gpu_ids)
        self.device = self.setup.device
        if self.is_main_process:
            for message in self.setup.warnings:
                self.logger.warning(message)
        if self.distributed:
            self.logger.info(f'>>> Distributed: {self.dist.world_size} processes '
                             f'({torch.distributed.get_backend()}), {self.dist.local_world_size} per node; '
                             f'rank 0 on {self.device}')
        if self.setup.is_cuda:
            torch.cuda.set_device(self.device)  # the default for any code that says just 'cuda'
            if not self.distributed:
                self.logger.info(f'>>> Using GPU: {",".join(map(str, self.setup.device_ids))}')
            # The original's speed setting; a seeded run trades it for repeatability.
            torch.backends.cudnn.benchmark = cfg.seed is None
            torch.backends.cudnn.deterministic = cfg.seed is not None

    def _build_model(self, mode):
        """The bare network for ``mode`` ('train' initialises it, 'test' leaves it for a checkpoint)."""
        from main.model import get_model
        return get_model(self.vertex_num, self.joint_num, mode)

    def _wrap_model(self, model):
        """Wrap the bare model for execution over ``self.setup.device_ids``.

        Several CUDA ids: ``DataParallel`` as the original.  One device or the CPU:
        the bare model.  (The place for DistributedDataParallel.)
        """
        if len(self.setup.device_ids) > 1:
            return torch.nn.DataParallel(model, device_ids=self.setup.device_ids,
                                         output_device=self.setup.device_ids[0])
        return model

    def close(self):
        self.logger.close()


# ------------------------------------------------------------------ trainer
class Trainer(_Runner):
    """Training driver: ``_make_batch_generator()``, ``_make_model()``, then ``train()``.

    ``use_amp`` / ``init_scale`` are the ``--amp`` / ``--init_scale`` flags.
    ``warm_start_path`` overrides ``<root>/tool/snapshot_0.pth.tar`` for the
    ``--continue`` warm start without ``--exp_dir``.
    """

    log_name = 'train_logs.txt'
    max_nonfinite_in_a_row = 20
    """Consecutive non-finite losses after which training stops."""
    snapshot_interval = 1
    """Save every N-th epoch (the last epoch always); 1 = every epoch, as the original."""

    def __init__(self, use_amp=False, init_scale=1024.0, warm_start_path=None):
        super().__init__()
        self.use_amp, amp_warning = resolve_amp(use_amp, self.device)
        if amp_warning:
            self.logger.warning(amp_warning)
        self.init_scale = float(init_scale)
        self.warm_start_path = str(warm_start_path) if warm_start_path else str(Path(cfg.root_dir) / WARM_START_FILE)
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0
        self.global_step = 0
        self.start_epoch = 0
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        self.config_path = None
        if self.is_main_process:
            self.config_path = write_config_yaml(os.path.join(cfg.output_dir, 'config.yaml'))
            self.logger.info(f'Experiment folder: {cfg.output_dir} (config: {self.config_path})')
        self.tb_writer = self._make_tensorboard_writer()

    # ---------------------------------------------------------------- data
    def _make_batch_generator(self):
        """Build the training set of §8.2 (3D group and 2D group, balanced) and its loader."""
        from torchvision import transforms
        from data.dataset import MultipleDatasets
        self.logger.info('Creating dataset...')
        transform = transforms.ToTensor()
        groups = []
        for names in (cfg.trainset_3d, cfg.trainset_2d):
            sets = [dataset_class(name)(transform, 'train') for name in names]
            sets = [s for s in sets if len(s) > 0]
            groups.append(MultipleDatasets(sets, make_same_len=False) if sets else None)
        groups = [g for g in groups if g is not None and len(g) > 0]
        if not groups:
            raise ValueError("Both 3D training set and 2D training set have zero length.")
        self.trainset = groups[0] if len(groups) == 1 else MultipleDatasets(groups, make_same_len=True)
        self.vertex_num, self.joint_num = _model_dims(_flat_datasets(groups[0])[0])

        self.loader_generator = torch.Generator()
        if cfg.seed is None:
            self.loader_generator.seed()  # fresh entropy: unseeded runs shuffle differently, as the original
        else:
            self.loader_generator.manual_seed(derive_seed(cfg.seed, 0))
        # One permutation per epoch from (shuffle seed, epoch), cut into per-process shards (a
        # single process takes all of it): step k of N processes together sees the batch k one
        # process with N times the batch would see.  The seed is drawn by rank 0 when cfg.seed is None.
        shuffle_seed = dist_utils.shared_seed(cfg.seed)
        self.sampler = dist_utils.DistributedShardSampler(
            len(self.trainset), self.dist.world_size, self.dist.rank,
            functools.partial(derive_seed, shuffle_seed, 1))
        per_step = self.setup.num_devices * cfg.train_batch_size  # DataParallel: a batch per GPU
        self.itr_per_epoch = math.ceil(len(self.sampler) / per_step)
        self.batch_generator = torch.utils.data.DataLoader(
            dataset=self.trainset, batch_size=per_step, sampler=self.sampler,
            num_workers=cfg.num_thread, pin_memory=self.setup.is_cuda, drop_last=False,
            generator=self.loader_generator,  # the workers' base seed
            worker_init_fn=functools.partial(seed_worker, cfg.snapshot()))
        if self.distributed:
            batch_text = (f'batch {per_step} per process x {self.dist.world_size} processes '
                          f'= {per_step * self.dist.world_size}')
        else:
            batch_text = f'batch {per_step}'
        if cfg.max_iters_per_epoch is not None:
            self.itr_per_epoch = min(self.itr_per_epoch, int(cfg.max_iters_per_epoch))
        self.logger.info(f'Training set: {len(self.trainset)} samples, {batch_text}, '
                         f'{self.itr_per_epoch} iterations per epoch.')

    # --------------------------------------------------------------- model
    def _make_model(self):
        """Build the model (train-mode initialisation), the optimizer, the scaler; resume or warm-start."""
        self.logger.info('Creating graph and optimizer...')
        model = self._build_model('train').to(self.device)
        self.model = model
        self.optimizer = self.get_optimizer(model)
        self.scaler = make_grad_scaler(self.device, self.use_amp, self.init_scale)
        if cfg.continue_train:
            self.start_epoch = self._resume() if cfg.exp_dir else self._warm_start()
        elif cfg.exp_dir:
            self.logger.warning(f'--exp_dir {cfg.exp_dir} is ignored without --continue.')
        self.network = self._wrap_model(model)
        self.network.train()

    def _wrap_model(self, model):
        """Under torchrun: DistributedDataParallel over this process's device (with
        SyncBatchNorm when ``cfg.sync_bn``); otherwise DataParallel / the bare model."""
        if not self.distributed:
            if cfg.sync_bn:
                self.logger.warning('cfg.sync_bn acts only under torchrun (DistributedDataParallel); '
                                    'this single-process run keeps plain BatchNorm.')
                set_graph_vectorized(model, True)
            return super()._wrap_model(model)
        if cfg.sync_bn:
            dist_utils.convert_sync_batchnorm(model)  # in place: same parameters, same keys
            count = sum(dist_utils.is_sync_batchnorm(m) for m in model.modules())
            self.logger.info(f'SyncBatchNorm: {count} BatchNorm layers synchronised over '
                             f'{self.dist.world_size} processes.')
        # The body model, regressors and adjacency are built identically on every rank;
        # only the BatchNorm statistics need rank 0's copy.
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, dist_utils.constant_buffer_names(model))
        device_ids = self.setup.device_ids or None
        # DDP's default: the buffers left (BatchNorm statistics) are copied from rank 0 before every
        # forward, so the running statistics are rank 0's, as DataParallel keeps device 0's.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, output_device=device_ids[0] if device_ids else None)

    def get_optimizer(self, model):
        """Adam over four groups in the original's order: backbone (``lr_backbone``),
        pose2feat, position_net, rotation_net (``lr``)."""
        groups = []
        covered = set()
        for i, name in enumerate(OPTIMIZER_MODULES):
            params = list(getattr(model, name).parameters())
            covered.update(id(p) for p in params)
            group = {'params': params}
            if i == 0:
                group['lr'] = cfg.lr_backbone
            groups.append(group)
        stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if stray:
            raise RuntimeError(f"Parameters outside {', '.join(OPTIMIZER_MODULES)} would not be trained: "
                               f"{ckpt_io.format_keys(stray)}")
        optimizer = torch.optim.Adam(groups, lr=cfg.lr)
        self.logger.info('The parameters of backbone, pose2feat, position_net, rotation_net, '
                         'are added to the optimizer.')
        return optimizer

    @staticmethod
    def lr_at(epoch, base_lr):
        """``base_lr / lr_dec_factor^m``, m = milestones of ``cfg.lr_dec_epoch`` ≤ ``epoch``."""
        passed = sum(1 for milestone in cfg.lr_dec_epoch if epoch >= milestone)
        return base_lr / (cfg.lr_dec_factor ** passed)

    def set_lr(self, epoch):
        """Set every group to ``lr_at(epoch, cfg.lr)`` as the original (which overwrites
        ``lr_backbone``); with ``cfg.apply_lr_backbone`` the backbone group follows
        ``lr_at(epoch, cfg.lr_backbone)`` instead."""
        for i, group in enumerate(self.optimizer.param_groups):
            base = cfg.lr_backbone if (i == 0 and cfg.apply_lr_backbone) else cfg.lr
            group['lr'] = self.lr_at(epoch, base)

    def get_lr(self):
        """The last group's LR (what the original logs)."""
        return self.optimizer.param_groups[-1]['lr']

    # ---------------------------------------------------------- checkpoints
    def save_model(self, epoch):
        """Write ``snapshot_<epoch>.pth.tar`` atomically into ``cfg.model_dir``."""
        path = ckpt_io.snapshot_path(cfg.model_dir, epoch)
        if self.is_main_process:
            state = {
                'epoch': int(epoch),
                # the bare model's keys + 'module.': the same file from DDP, DataParallel or one device
                'network': ckpt_io.add_module_prefix(self.model.state_dict()),
                'optimizer': self.optimizer.state_dict(),
                'scaler': self.scaler.state_dict(),
                'config': plain_config(),
            }
            ckpt_io.save_checkpoint(state, path)
            self.logger.info(f'Write snapshot into {path}')
        dist_utils.barrier()  # no rank runs ahead of a snapshot it may look for
        return path

    def _resume(self):
        """``--continue --exp_dir X``: link/copy X's latest snapshot into this run and load it
        strictly with optimizer and scaler state.  Returns the next epoch."""
        source_dir = Path(cfg.exp_dir) / 'checkpoint'
        latest = ckpt_io.latest_snapshot(source_dir)
        if latest is None:
            raise FileNotFoundError(
                f"--continue --exp_dir {cfg.exp_dir}: no snapshot_<epoch>.pth.tar in {source_dir}.")
        _, source = latest
        local = os.path.join(cfg.model_dir, os.path.basename(source))
        if self.is_main_process:
            _link_or_copy(source, local)
        # Every rank reads the file itself (optimizer state is per rank; no world-size-dependent
        # state is stored, so a run may resume with another number of processes).
        checkpoint = ckpt_io.load_checkpoint_file(local if self.is_main_process else source,
                                                  map_location=self.device)
        missing_smpl = ckpt_io.load_network_strict(
            self.model, ckpt_io.network_state_of(checkpoint, local), source=local)
        if missing_smpl:
            self.logger.info(f'{local} holds no SMPL buffers; the local body model is kept.')
        if 'optimizer' in checkpoint:
            try:
                self.optimizer.load_state_dict(checkpoint['optimizer'])
            except (ValueError, KeyError) as exc:
                raise ckpt_io.CheckpointError(
                    f"The optimizer state in {local} does not fit this model's Adam groups: {exc}") from exc
        else:
            self.logger.warning(f'{local} has no optimizer state; Adam starts afresh.')
        scaler_state = checkpoint.get('scaler') or {}
        if scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler_state)
        self._report_config_changes(checkpoint.get('config'), local)
        if not isinstance(checkpoint.get('epoch'), int):
            raise ckpt_io.CheckpointError(f"Checkpoint {local} has no integer 'epoch' entry.")
        self.logger.info(f'Load checkpoint from {local}')
        return checkpoint['epoch'] + 1

    def _warm_start(self):
        """``--continue`` without ``--exp_dir``: the partial backbone load of ``snapshot_0``."""
        source = self.warm_start_path
        if not os.path.isfile(source):
            raise FileNotFoundError(
                f"--continue without --exp_dir needs the backbone warm start {source} "
                f"(tool/snapshot_0.pth.tar). Make it from the public SimpleBaseline checkpoint "
                f"pose_resnet_50_256x192.pth.tar with: python tool/convert_simple_to_i2l.py "
                f"--src pose_resnet_50_256x192.pth.tar (see the README).")
        local = ckpt_io.snapshot_path(cfg.model_dir, 0)
        if self.is_main_process:
            _link_or_copy(source, local)
        checkpoint = ckpt_io.load_checkpoint_file(local if self.is_main_process else source,
                                                  map_location=self.device)
        report = ckpt_io.load_network_partial(self.model, ckpt_io.network_state_of(checkpoint, local))
        self.warm_start_report = report
        if not report.loaded:
            raise ckpt_io.CheckpointError(
                f"No entry of {source} matches the model's names and shapes: is it the converted "
                "pose_resnet_50 file (keys 'module.backbone.conv1.weight', ...)?")
        self.logger.info(report.summary(local))
        self.logger.info(f'Load checkpoint from {local}')
        return int(checkpoint.get('epoch', 0)) + 1

    def _report_config_changes(self, old_config, source):
        """Log options that differ from the resumed run's (directories and flags excluded)."""
        if not isinstance(old_config, dict):
            return
        ignore = {'output_dir', 'exp_dir', 'continue_train', 'gpu_ids', 'output_root', 'num_thread'}
        now = plain_config()
        changed = [f'{k}: {old_config[k]!r} -> {now[k]!r}' for k in sorted(now)
                   if k in old_config and k not in ignore and old_config[k] != now[k]]
        if changed:
            self.logger.warning(f'Options differ from the run of {source}: ' + '; '.join(changed))

    # ---------------------------------------------------------------- loop
    def train(self):
        """Run epochs ``start_epoch .. cfg.end_epoch - 1``, saving a snapshot after each."""
        for epoch in range(self.start_epoch, cfg.end_epoch):
            self.train_epoch(epoch)
            if self.distributed:
                # Each rank's last forward updated its own BatchNorm statistics: all take rank 0's
                # (those the snapshot holds), as DDP does before every forward.
                dist_utils.broadcast_module_buffers(
                    self.model, dist_utils.batchnorm_statistic_names(self.model))
            if (epoch + 1) % self.snapshot_interval == 0 or epoch == cfg.end_epoch - 1:
                self.save_model(epoch)
        if self.nonfinite_total:
            self.logger.warning(f'{self.nonfinite_total} iteration(s) had a non-finite loss and were skipped.')
        if self.tb_writer is not None:
            self.tb_writer.close()

    def _begin_epoch(self, epoch):
        """LR, dataset epoch and per-epoch seeds (an epoch's draws do not depend on earlier ones)."""
        self.set_lr(epoch)
        set_dataset_epoch(self.trainset, epoch)
        if getattr(self, 'sampler', None) is not None:
            self.sampler.set_epoch(epoch)  # the epoch's permutation
        if cfg.seed is not None:
            self.loader_generator.manual_seed(derive_seed(cfg.seed, 1, epoch))
            seed_everything(derive_seed(cfg.seed, 2, epoch))

    def train_epoch(self, epoch):
        """One epoch of at most ``itr_per_epoch`` iterations."""
        self._begin_epoch(epoch)
        self.network.train()
        running = {}
        bar = tqdm(total=self.itr_per_epoch, desc=f'Epoch {epoch}/{cfg.end_epoch}',
                   disable=not self.is_main_process, leave=True, dynamic_ncols=True)
        self.tot_timer.tic()
        self.read_timer.tic()
        for itr, (inputs, targets, meta_info) in enumerate(self.batch_generator):
            if itr >= self.itr_per_epoch:
                break
            self.read_timer.toc()
            self.gpu_timer.tic()
            losses = self.train_step(inputs, targets, meta_info, epoch, itr)
            self.gpu_timer.toc()
            if losses is not None:
                self._log_iteration(epoch, itr, losses)
                for key, value in losses.items():
                    running[key] = running.get(key, 0.0) + value
                running['_n'] = running.get('_n', 0) + 1
                total = sum(v for k, v in running.items() if k != '_n') / running['_n']
                bar.set_postfix(loss=f'{total:.4f}', lr=f'{self.get_lr():g}')
            bar.update(1)
            self.global_step += 1
            self.tot_timer.toc()
            self.tot_timer.tic()
            self.read_timer.tic()
        bar.close()
        if running.get('_n'):
            means = {k: v / running['_n'] for k, v in running.items() if k != '_n'}
            self.logger.info(f'Epoch {epoch}/{cfg.end_epoch} done: {running["_n"]} iterations, mean loss '
                             f'{sum(means.values()):.4f} (' + ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + ')')

    def train_step(self, inputs, targets, meta_info, epoch=0, itr=0):
        """Forward, reduce, backward and step as §8.5; returns ``{term: float}`` or ``None``
        when the step was skipped (non-finite loss, or a per-device batch of one)."""
        batch = batch_size_of(inputs)
        if min(chunk_sizes(batch, self.setup.num_devices)) < 2:
            self.logger.warning(f'Epoch {epoch} itr {itr}: a batch of {batch} sample(s) would give a '
                                'device a single sample, which BatchNorm cannot train on; skipped.')
            return None
        inputs, targets, meta_info = move_to_device((inputs, targets, meta_info), self.device,
                                                    non_blocking=self.setup.is_cuda)
        self.optimizer.zero_grad()
        with autocast(self.device, self.use_amp):
            loss = self.network(inputs, targets, meta_info, 'train')
            loss = {key: value.mean() for key, value in loss.items()}
            total = sum(loss[key] for key in loss)
        # Under DDP the logged terms are the mean over ranks, and a non-finite term on any rank
        # makes every rank skip the step (a rank skipping alone would stall the gradient all-reduce).
        terms = torch.stack([value.detach().float() for value in loss.values()] + [total.detach().float()])
        *term_values, total_value = dist_utils.all_reduce_mean_(terms).tolist()
        values = dict(zip(loss.keys(), term_values))
        if not (math.isfinite(total_value) and all(math.isfinite(v) for v in term_values)):
            self._handle_nonfinite(epoch, itr, values)
            return None
        self.nonfinite_in_a_row = 0
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        if self.scaler.is_enabled():
            # The original resets the scale to init_scale every step (a fixed scale).
            self.scaler.update(None if cfg.amp_dynamic_scale else self.init_scale)
        return values

    def _handle_nonfinite(self, epoch, itr, values):
        """Skip the step, count it, and stop after ``max_nonfinite_in_a_row`` in a row."""
        self.nonfinite_total += 1
        self.nonfinite_in_a_row += 1
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        self.logger.warning(
            f'Epoch {epoch} itr {itr}: non-finite loss ({", ".join(bad)}); step skipped '
            f'({self.nonfinite_in_a_row} in a row, {self.nonfinite_total} in this run).')
        if self.scaler.is_enabled() and cfg.amp_dynamic_scale:
            # Back off as for an overflow; scale() first so a fresh scaler has its state.
            self.scaler.scale(torch.ones((), device=self.device))
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        if self.nonfinite_in_a_row >= self.max_nonfinite_in_a_row:
            latest = ckpt_io.latest_snapshot(cfg.model_dir)
            kept = f'the last good snapshot {latest[1]} is intact' if latest else 'no snapshot was written yet'
            message = (f'{self.nonfinite_in_a_row} consecutive iterations had a non-finite loss '
                       f'(last at epoch {epoch} itr {itr}); training stopped, {kept}. '
                       'Try a lower cfg.lr, or --amp off.')
            self.logger.error(message)
            raise NonFiniteLossError(message)

    def _log_iteration(self, epoch, itr, losses):
        """The per-iteration line of §8.5 into ``train_logs.txt`` (and TensorBoard)."""
        parts = [
            f'Epoch {epoch}/{cfg.end_epoch} itr {itr}/{self.itr_per_epoch}:',
            'lr: %g' % self.get_lr(),
            'speed: %.2f(%.2fs r%.2f)s/itr' % (self.tot_timer.average_time, self.gpu_timer.average_time,
                                               self.read_timer.average_time),
            '%.2fh/epoch' % (self.tot_timer.average_time / 3600. * self.itr_per_epoch),
        ]
        parts += ['%s: %.4f' % ('loss_' + key, value) for key, value in losses.items()]
        self.logger.info(' '.join(parts), console=False)
        if self.tb_writer is not None:
            for key, value in losses.items():
                self.tb_writer.add_scalar(f'loss/{key}', value, self.global_step)
            self.tb_writer.add_scalar('loss/total', sum(losses.values()), self.global_step)
            self.tb_writer.add_scalar('lr', self.get_lr(), self.global_step)

    def _make_tensorboard_writer(self):
        """A SummaryWriter under ``<log_dir>/tensorboard`` if tensorboard is installed, else None."""
        if not self.is_main_process:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(os.path.join(cfg.log_dir, 'tensorboard'))

    def close(self):
        if self.tb_writer is not None:
            self.tb_writer.close()
        super().close()


# ------------------------------------------------------------------ tester
class Tester(_Runner):
    """Test driver: ``_make_batch_generator()``, ``_make_model()``, then ``test()``.

    ``test_epoch`` selects ``<model_dir>/snapshot_<test_epoch>.pth.tar``;
    ``save_meshes`` adds the root-relative meshes to the predictions file.
    """

    log_name = 'test_logs.txt'

    def __init__(self, test_epoch, save_meshes=False):
        super().__init__()
        self.test_epoch = int(test_epoch)
        self.save_meshes = bool(save_meshes)

    def _make_batch_generator(self):
        from torchvision import transforms
        self.logger.info('Creating dataset...')
        self.testset = dataset_class(cfg.testset)(transforms.ToTensor(), 'test')
        self.vertex_num, self.joint_num = _model_dims(self.testset)
        loader_args = dict(num_workers=cfg.num_thread, pin_memory=self.setup.is_cuda,
                           worker_init_fn=functools.partial(seed_worker, cfg.snapshot()))
        self.test_batch = self.setup.num_devices * cfg.test_batch_size
        if self.distributed:
            # Whole single-process batches dealt out round-robin: identical per-batch results.
            sampler = dist_utils.ShardedBatchSampler(len(self.testset), self.test_batch,
                                                     self.dist.world_size, self.dist.rank)
            self.batch_ids = sampler.batch_ids()
            self.batch_generator = torch.utils.data.DataLoader(
                dataset=self.testset, batch_sampler=sampler, **loader_args)
            self.logger.info(f'Test set: {len(self.testset)} samples in batches of {self.test_batch}, '
                             f'shared by {self.dist.world_size} processes.')
        else:
            self.batch_generator = torch.utils.data.DataLoader(
                dataset=self.testset, batch_size=self.test_batch, shuffle=False, **loader_args)

    @property
    def checkpoint_path(self):
        return ckpt_io.snapshot_path(cfg.model_dir, self.test_epoch)

    def _make_model(self):
        """Build the test-mode model and load ``snapshot_<test_epoch>`` strictly."""
        path = self.checkpoint_path
        if not os.path.isfile(path):
            found = [os.path.basename(p) for _, p in ckpt_io.list_snapshots(cfg.model_dir)]
            raise FileNotFoundError(
                f"Cannot find model at {path} (snapshots there: {', '.join(found) or 'none'}; "
                "pass the experiment folder with --exp_dir and an epoch with --test_epoch).")
        self.logger.info(f'Load checkpoint from {path}')
        self.logger.info('Creating graph...')
        model = self._build_model('test').to(self.device)
        checkpoint = ckpt_io.load_checkpoint_file(path, map_location=self.device)
        ckpt_io.load_network_strict(model, ckpt_io.network_state_of(checkpoint, path), source=path)
        model.eval()
        self.model = model
        # Evaluation needs no gradient synchronisation: under torchrun each rank runs the bare model.
        self.network = model if self.distributed else self._wrap_model(model)
        self.network.eval()

    def _evaluate(self, outs, cur_sample_idx):
        return self.testset.evaluate(outs, cur_sample_idx)

    def _print_eval_result(self, eval_result):
        self.testset.print_eval_result(eval_result)

    def _summarize(self, eval_result):
        if hasattr(self.testset, 'summarize'):
            return self.testset.summarize(eval_result)
        return {k: float(np.mean(v)) for k, v in eval_result.items() if len(v)}

    def _camera_translation(self, out, meta_info):
        """(B,3) camera translation in metres of a test-mode output dict (MODEL.md §5.6),
        computed by the model from ``cam_param``."""
        if 'cam_trans' in out:
            return out['cam_trans']
        return self.model.camera_translation(out['cam_param'], meta_info, 'test')

    def test(self):
        """Run the test set; print, log and write the metrics; return ``summarize()``'s dict.

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
        self.result_paths = self._write_results(summary, predictions)
        self.logger.info(f'Metrics: {json.dumps(json_safe(summary))}')
        self.logger.info(f'Wrote {self.result_paths[0]} and {self.result_paths[1]}')
        return summary

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
                                                        non_blocking=self.setup.is_cuda)
            with torch.no_grad():
                out = self.network(inputs, targets, meta_info, 'test')
                cam_trans = _to_numpy(self._camera_translation(out, meta_info))
            out = {k: _to_numpy(v) for k, v in out.items()}
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

    def _write_results(self, summary, predictions):
        """``result/eval_<testset>_snapshot_<epoch>.json`` and ``predictions_...npz``."""
        os.makedirs(cfg.result_dir, exist_ok=True)
        stem = f'{cfg.testset}_snapshot_{self.test_epoch}'
        json_path = os.path.join(cfg.result_dir, f'eval_{stem}.json')
        with open(json_path, 'w') as f:
            json.dump(json_safe(summary), f, indent=2)
        arrays = {k: np.concatenate(v, axis=0) for k, v in predictions.items() if v}
        npz_path = os.path.join(cfg.result_dir, f'predictions_{stem}.npz')
        np.savez(npz_path, **arrays)
        return json_path, npz_path
