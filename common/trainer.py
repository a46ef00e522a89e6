"""The training driver: :class:`Trainer`.

    trainer = Trainer(use_amp=False)
    trainer.make_batch_generator()   # the mixed training set and its loader
    trainer.make_model()             # model, Adam, GradScaler; resume or warm start
    trainer.train()                  # epochs start_epoch .. cfg.end_epoch - 1
    trainer.close()

The trainer is where the run's configuration meets the engine: it reads ``cfg`` and
hands explicit values to the seeding, checkpoint and distributed helpers.  Snapshots
store the bare model's keys under the ``module.`` prefix of the released files,
whatever wraps the model (one device, DataParallel, DistributedDataParallel).

Under torchrun every process drives one device: the model is wrapped in
DistributedDataParallel (optionally with SyncBatchNorm), each epoch is sharded with a
seeded :class:`~common.utils.distributed.DistributedShardSampler`, the logged losses
are averaged over ranks, and rank 0 alone logs and writes files.
(docs/METHOD.md, "Training and checkpoints")
"""
import functools
import math
import os

import torch
from tqdm import tqdm

from common.nets.stacked import canonical_optimizer_state
from common.runner import Runner
from common.training_monitor import TrainingMonitor
from common.seeding import derive_seed, seed_everything, seed_worker, set_dataset_epoch
from common.utils import checkpoint as ckpt_io
from common.utils import distributed as dist_utils
from common.utils.batch import batch_size_of, chunk_sizes
from common.utils.device import autocast, make_grad_scaler, move_to_device, resolve_amp
from data.registry import dataset_class
from main.config import cfg

OPTIMIZER_MODULES = ('backbone', 'pose2feat', 'position_net', 'rotation_net')
# Options that may differ between a run and the run it resumes without a warning.
RESUME_IGNORED_OPTIONS = {'output_dir', 'exp_dir', 'continue_train', 'gpu_ids', 'output_root', 'num_thread'}


class NonFiniteLossError(RuntimeError):
    """Too many consecutive iterations had a NaN/inf loss; training stopped."""


def model_dims(dataset):
    """``(vertex_num, joint_num)`` of the model for ``dataset``: its own attributes, else SMPL's
    6890 vertices and the 30 joints of the SMPL joint set."""
    from common.utils.joints import SMPL30
    from common.utils.smpl import NUM_VERTICES
    vertex_num = getattr(dataset, 'vertex_num', None)
    joint_num = getattr(dataset, 'joint_num', None)
    if vertex_num is None or joint_num is None:
        vertex_num, joint_num = NUM_VERTICES, len(SMPL30.names)
    return vertex_num, joint_num


def leaf_datasets(dataset):
    """The leaf datasets of a (possibly nested) mixer, in order."""
    children = getattr(dataset, 'dbs', None)
    if isinstance(children, (list, tuple)):
        return [leaf for child in children for leaf in leaf_datasets(child)]
    return [dataset]


def build_training_set(trainset_3d, trainset_2d, transform):
    """The original's training mixture: each group's non-empty sets concatenated, then the
    3D and 2D groups balanced to the same length.  Returns ``(dataset, first_group)``."""
    from data.dataset import MultipleDatasets
    groups = []
    for names in (trainset_3d, trainset_2d):
        sets = [dataset_class(name)(transform, 'train') for name in names]
        sets = [s for s in sets if len(s) > 0]
        groups.append(MultipleDatasets(sets, make_same_len=False) if sets else None)
    groups = [g for g in groups if g is not None and len(g) > 0]
    if not groups:
        raise ValueError("Both 3D training set and 2D training set have zero length.")
    dataset = groups[0] if len(groups) == 1 else MultipleDatasets(groups, make_same_len=True)
    return dataset, groups[0]


def running_statistics_copy(model):
    """A copy of every batch-norm running statistic of ``model``, for
    :func:`restore_running_statistics`: one flat tensor per dtype and device (a few hundred
    KiB), so saving costs one concatenation per group on every step."""
    groups = dist_utils.buffer_groups(buffer for _, buffer in dist_utils.running_statistics(model))
    return [(buffers, dist_utils.flatten_buffers(buffers)) for buffers in groups]


def restore_running_statistics(saved):
    """Write the copies of :func:`running_statistics_copy` back into their buffers, in place
    (only when a step is skipped)."""
    for buffers, flat in saved:
        dist_utils.unflatten_into(buffers, flat)


def gradients_are_finite(optimizer):
    """Whether every gradient of ``optimizer``'s parameters is finite.

    One min/max reduction per gradient (no copy) and one host sync: NaN propagates into both and
    an infinite entry is the minimum or the maximum (a 2-norm could overflow on large finite
    gradients)."""
    grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
    if not grads:
        return True
    extremes = [value for g in grads for value in torch.aminmax(g.detach())]
    return bool(torch.isfinite(torch.stack(extremes)).all())


def lr_at(epoch, base_lr, lr_dec_epoch, lr_dec_factor):
    """``base_lr / lr_dec_factor^m``, m = number of milestones in ``lr_dec_epoch`` ≤ ``epoch``."""
    passed = sum(1 for milestone in lr_dec_epoch if epoch >= milestone)
    return base_lr / (lr_dec_factor ** passed)


class Trainer(Runner):
    """Training driver: :meth:`make_batch_generator`, :meth:`make_model` (or :meth:`setup`
    for both), then :meth:`train`.

    ``use_amp`` / ``init_scale``: the ``--amp`` / ``--init_scale`` flags.
    ``amp_dtype``: the autocast dtype of ``use_amp``: ``torch.float16`` (the original's, with
    the GradScaler) or ``torch.bfloat16`` (float32's exponent range: no loss scaling, the
    scaler stays disabled; used by ``tool/gpu_throughput.py``).
    ``warm_start_path``: the file of the ``--continue`` warm start without ``--exp_dir``
    (default ``<root>/tool/snapshot_0.pth.tar``).
    ``snapshot_interval``: save every N-th epoch (the last epoch always); 1 = every epoch.
    ``sync_batchnorm_converter``: the function that makes a model's BatchNorm layers
    synchronised under torchrun with ``cfg.sync_bn`` (default
    :func:`common.utils.distributed.convert_sync_batchnorm`, PyTorch's CUDA layer);
    it converts in place, keeping parameters, buffers and state_dict keys.
    """

    log_name = 'train_logs.txt'
    max_nonfinite_in_a_row = 20
    """Consecutive non-finite losses after which training stops."""

    def __init__(self, use_amp=False, init_scale=1024.0, warm_start_path=None, snapshot_interval=1,
                 sync_batchnorm_converter=None, amp_dtype=torch.float16):
        super().__init__(cfg.log_dir, cfg.gpu_ids, deterministic=cfg.seed is not None)
        self.use_amp, amp_warning = resolve_amp(use_amp, self.device)
        if amp_warning:
            self.logger.warning(amp_warning)
        self.init_scale = float(init_scale)
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f'amp_dtype must be torch.float16 or torch.bfloat16, got {amp_dtype}')
        self.amp_dtype = amp_dtype
        self.warm_start_path = str(warm_start_path) if warm_start_path else ckpt_io.warm_start_file(cfg.root_dir).path
        self.snapshot_interval = int(snapshot_interval)
        self.sync_batchnorm_converter = sync_batchnorm_converter or dist_utils.convert_sync_batchnorm
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0
        self.global_step = 0
        self.start_epoch = 0
        self.sampler = None
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        self.config_path = None
        if self.is_main_process:
            self.config_path = cfg.write_yaml(os.path.join(cfg.output_dir, 'config.yaml'))
            self.logger.info(f'Experiment folder: {cfg.output_dir} (config: {self.config_path})')
        # train_losses.csv, training.png and TensorBoard scalars (common/training_monitor.py)
        self.monitor = TrainingMonitor(cfg.log_dir, self.logger) if self.is_main_process else None

    # ------------------------------------------------------------ set-up
    def setup(self):
        """:meth:`make_batch_generator`, then :meth:`make_model`."""
        self.make_batch_generator()
        self.make_model()

    def make_batch_generator(self):
        """Build the training set (3D group and 2D group, balanced) and its loader."""
        from torchvision import transforms
        self.logger.info('Creating dataset...')
        self.trainset, first_group = build_training_set(cfg.trainset_3d, cfg.trainset_2d, transforms.ToTensor())
        self.vertex_num, self.joint_num = model_dims(leaf_datasets(first_group)[0])

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
        per_step = self.device_setup.num_devices * cfg.train_batch_size  # DataParallel: a batch per GPU
        self.itr_per_epoch = math.ceil(len(self.sampler) / per_step)
        self.batch_generator = torch.utils.data.DataLoader(
            dataset=self.trainset, batch_size=per_step, sampler=self.sampler,
            num_workers=cfg.num_thread, pin_memory=self.device_setup.is_cuda, drop_last=False,
            generator=self.loader_generator,  # the workers' base seed
            worker_init_fn=seed_worker)
        if self.distributed:
            batch_text = (f'batch {per_step} per process x {self.dist.world_size} processes '
                          f'= {per_step * self.dist.world_size}')
        else:
            batch_text = f'batch {per_step}'
        if cfg.max_iters_per_epoch is not None:
            self.itr_per_epoch = min(self.itr_per_epoch, int(cfg.max_iters_per_epoch))
        self.logger.info(f'Training set: {len(self.trainset)} samples, {batch_text}, '
                         f'{self.itr_per_epoch} iterations per epoch.')

    def make_model(self):
        """Build the model (train-mode initialisation), the optimizer and the scaler; resume
        (``--continue --exp_dir``) or warm-start (``--continue``); wrap it for the devices.

        Needs ``vertex_num`` / ``joint_num`` (set by :meth:`make_batch_generator`)."""
        from main.model import get_model
        self.logger.info('Creating graph and optimizer...')
        model = get_model(self.vertex_num, self.joint_num, 'train').to(self.device)
        self.model = model
        self.optimizer = self.get_optimizer(model)
        self.scaler = make_grad_scaler(self.device, self.use_amp and self.amp_dtype == torch.float16,
                                       self.init_scale)
        if cfg.continue_train:
            self.start_epoch = self._resume() if cfg.exp_dir else self._warm_start()
        elif cfg.exp_dir:
            self.logger.warning(f'--exp_dir {cfg.exp_dir} is ignored without --continue.')
        # Steps count as in an uninterrupted run, so a resumed run's curves (CSV, TensorBoard) continue.
        self.global_step = self.start_epoch * getattr(self, 'itr_per_epoch', 0)
        self.network = self._wrap_model(model)
        self.network.train()

    # Names of the original code base, for code ported from it.
    def _make_batch_generator(self):
        return self.make_batch_generator()

    def _make_model(self):
        return self.make_model()

    def _wrap_model(self, model):
        """Under torchrun: DistributedDataParallel over this process's device (with
        SyncBatchNorm when ``cfg.sync_bn``); otherwise DataParallel / the bare model."""
        if not self.distributed:
            if cfg.sync_bn:
                self.logger.warning('cfg.sync_bn acts only under torchrun (DistributedDataParallel); '
                                    'this single-process run keeps plain BatchNorm.')
            return self.wrap_for_devices(model)
        if cfg.sync_bn:
            plain_before = dist_utils.count_batchnorm_layers(model)
            self.sync_batchnorm_converter(model)  # in place: same parameters, same keys
            count = plain_before - dist_utils.count_batchnorm_layers(model)
            self.logger.info(f'SyncBatchNorm: {count} BatchNorm layers synchronised over '
                             f'{self.dist.world_size} processes.')
        self.batchnorm_statistics = dist_utils.running_statistic_names(model)
        device_ids = self.device_setup.device_ids or None
        # The body model, regressors and adjacency are built identically on every rank, so DDP
        # broadcasts no buffer (broadcast_buffers=False); the trainer copies rank 0's BatchNorm
        # statistics before every forward instead, as DDP's default does for all buffers, so the
        # running statistics are rank 0's, as DataParallel keeps device 0's.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, output_device=device_ids[0] if device_ids else None,
            broadcast_buffers=False)

    def sync_batchnorm_statistics(self):
        """Under torchrun: every rank takes rank 0's BatchNorm running statistics."""
        if self.distributed:
            dist_utils.broadcast_module_buffers(self.model, self.batchnorm_statistics)

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
        return lr_at(epoch, base_lr, cfg.lr_dec_epoch, cfg.lr_dec_factor)

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

    # ------------------------------------------------------- checkpoints
    def save_model(self, epoch):
        """Write ``snapshot_<epoch>.pth.tar`` atomically into ``cfg.model_dir``."""
        path = ckpt_io.snapshot_path(cfg.model_dir, epoch)
        if self.is_main_process:
            state = {
                'epoch': int(epoch),
                # the bare model's keys + 'module.': the same file from DDP, DataParallel or one device
                'network': ckpt_io.add_module_prefix(self.model.state_dict()),
                # per-item layout of the original model (graph vertices, pose branches)
                'optimizer': canonical_optimizer_state(self.model, self.optimizer),
                'scaler': self.scaler.state_dict(),
                'config': cfg.plain_options(),
            }
            ckpt_io.save_checkpoint(state, path)
            self.logger.info(f'Write snapshot into {path}')
        dist_utils.barrier()  # no rank runs ahead of a snapshot it may look for
        return path

    def _resume(self):
        """``--continue --exp_dir X``: continue X's latest snapshot in this run's folder.
        Returns the next epoch."""
        result = ckpt_io.resume_training(cfg.exp_dir, cfg.model_dir, self.model, self.optimizer, self.scaler,
                                         is_main_process=self.is_main_process, map_location=self.device)
        if result.missing_smpl:
            self.logger.info(f'{result.path} holds no SMPL buffers; the local body model is kept.')
        if not result.had_optimizer:
            self.logger.warning(f'{result.path} has no optimizer state; Adam starts afresh.')
        self._report_config_changes(result.config, result.path)
        self.logger.info(f'Load checkpoint from {result.path}')
        if self.monitor is not None:
            self.monitor.carry_over(os.path.join(cfg.exp_dir, 'log'), result.next_epoch)
        return result.next_epoch

    def _warm_start(self):
        """``--continue`` without ``--exp_dir``: the partial backbone load of ``snapshot_0``."""
        next_epoch, report, local = ckpt_io.warm_start(self.warm_start_path, cfg.model_dir, self.model,
                                                       is_main_process=self.is_main_process,
                                                       map_location=self.device)
        self.warm_start_report = report
        self.logger.info(report.summary(local))
        self.logger.info(f'Load checkpoint from {local}')
        return next_epoch

    def _report_config_changes(self, old_config, source):
        """Log options that differ from the resumed run's (directories and flags excluded)."""
        if not isinstance(old_config, dict):
            return
        now = cfg.plain_options()
        changed = [f'{k}: {old_config[k]!r} -> {now[k]!r}' for k in sorted(now)
                   if k in old_config and k not in RESUME_IGNORED_OPTIONS and old_config[k] != now[k]]
        if changed:
            self.logger.warning(f'Options differ from the run of {source}: ' + '; '.join(changed))

    # -------------------------------------------------------------- loop
    def train(self):
        """Run epochs ``start_epoch .. cfg.end_epoch - 1``, saving a snapshot after each
        ``snapshot_interval``-th and the last."""
        for epoch in range(self.start_epoch, cfg.end_epoch):
            self.train_epoch(epoch)
            # Each rank's last forward updated its own BatchNorm statistics: all take rank 0's
            # (those the snapshot holds).
            self.sync_batchnorm_statistics()
            if (epoch + 1) % self.snapshot_interval == 0 or epoch == cfg.end_epoch - 1:
                self.save_model(epoch)
        if self.nonfinite_total:
            self.logger.warning(f'{self.nonfinite_total} iteration(s) had a non-finite loss or gradient '
                                'and were skipped.')
        if self.monitor is not None:
            self.monitor.close()

    def begin_epoch(self, epoch):
        """LR, dataset epoch and per-epoch seeds (an epoch's draws do not depend on earlier ones)."""
        self.set_lr(epoch)
        set_dataset_epoch(self.trainset, epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)  # the epoch's permutation
        if cfg.seed is not None:
            self.loader_generator.manual_seed(derive_seed(cfg.seed, 1, epoch))
            seed_everything(derive_seed(cfg.seed, 2, epoch))


    def train_epoch(self, epoch):
        """One epoch of at most ``itr_per_epoch`` iterations."""
        self.begin_epoch(epoch)
        self.network.train()
        running = {}
        # The console counts epochs from 1 (the last bar reads N/N); the file's per-iteration
        # lines keep the original's 0-based epoch index, the number of snapshot_<epoch>.
        bar = tqdm(total=self.itr_per_epoch, desc=f'Epoch {epoch + 1}/{cfg.end_epoch}',
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
        if self.monitor is not None:
            self.monitor.end_epoch()
        if running.get('_n'):
            means = {k: v / running['_n'] for k, v in running.items() if k != '_n'}
            self.logger.info(f'Epoch {epoch + 1}/{cfg.end_epoch} done: {running["_n"]} iterations, mean loss '
                             f'{sum(means.values()):.4f} (' + ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + ')')

    def train_step(self, inputs, targets, meta_info, epoch=0, itr=0):
        """Forward, reduce (mean of each term over the batch), backward and Adam step; returns
        ``{term: float}`` or ``None`` when the step was skipped (non-finite loss, non-finite
        gradient without AMP, or a per-device batch of one)."""
        batch = batch_size_of(inputs)
        if min(chunk_sizes(batch, self.device_setup.num_devices)) < 2:
            self.logger.warning(f'Epoch {epoch} itr {itr}: a batch of {batch} sample(s) would give a '
                                'device a single sample, which BatchNorm cannot train on; skipped.')
            return None
        inputs, targets, meta_info = move_to_device((inputs, targets, meta_info), self.device,
                                                    non_blocking=self.device_setup.is_cuda)
        self.optimizer.zero_grad()
        self.sync_batchnorm_statistics()
        # The train-mode forward updates the BatchNorm running statistics before the loss is
        # known: keep a copy so that a skipped step leaves them exactly as they were.
        saved_statistics = running_statistics_copy(self.model)
        with autocast(self.device, self.use_amp, self.amp_dtype):
            loss = self.network(inputs, targets, meta_info, 'train')
            loss = {key: value.mean() for key, value in loss.items()}
            total = sum(loss[key] for key in loss)
        # Under DDP the logged terms are the mean over ranks, and a non-finite term on any rank
        # makes every rank skip the step (a rank skipping alone would stall the gradient all-reduce).
        terms = torch.stack([value.detach().float() for value in loss.values()] + [total.detach().float()])
        *term_values, total_value = dist_utils.all_reduce_mean_(terms).tolist()
        values = dict(zip(loss.keys(), term_values))
        if not (math.isfinite(total_value) and all(math.isfinite(v) for v in term_values)):
            restore_running_statistics(saved_statistics)
            bad = [key for key, value in values.items() if not math.isfinite(value)]
            self._handle_nonfinite(epoch, itr, f'non-finite loss ({", ".join(bad)})')
            return None
        self.scaler.scale(total).backward()
        if not self.scaler.is_enabled() and not gradients_are_finite(self.optimizer):
            # A finite loss can still overflow inside backward; Adam would fold the NaN/inf into
            # its moments and every weight.  (With AMP the GradScaler already skips this step.)
            # Under DDP the gradients are already all-reduced, so every rank decides alike.
            self.optimizer.zero_grad()
            restore_running_statistics(saved_statistics)
            self._handle_nonfinite(epoch, itr, 'non-finite gradient (finite loss)')
            return None
        self.nonfinite_in_a_row = 0
        self.scaler.step(self.optimizer)
        if self.scaler.is_enabled():
            # The original resets the scale to init_scale every step (a fixed scale).
            self.scaler.update(None if cfg.amp_dynamic_scale else self.init_scale)
        return values

    def _handle_nonfinite(self, epoch, itr, what):
        """Skip the step, count it, and stop after ``max_nonfinite_in_a_row`` in a row.
        ``what`` names the non-finite value for the log line (loss terms or gradient)."""
        self.nonfinite_total += 1
        self.nonfinite_in_a_row += 1
        self.logger.warning(
            f'Epoch {epoch} itr {itr}: {what}; step skipped '
            f'({self.nonfinite_in_a_row} in a row, {self.nonfinite_total} in this run).')
        if self.scaler.is_enabled() and cfg.amp_dynamic_scale:
            # Back off as for an overflow; scale() first so a fresh scaler has its state.
            self.scaler.scale(torch.ones((), device=self.device))
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        if self.nonfinite_in_a_row >= self.max_nonfinite_in_a_row:
            latest = ckpt_io.latest_snapshot(cfg.model_dir)
            kept = f'the last good snapshot {latest[1]} is intact' if latest else 'no snapshot was written yet'
            message = (f'{self.nonfinite_in_a_row} consecutive iterations had a non-finite loss or gradient '
                       f'(last at epoch {epoch} itr {itr}); training stopped, {kept}. '
                       'Try a lower cfg.lr, or --amp off.')
            self.logger.error(message)
            raise NonFiniteLossError(message)

    def _log_iteration(self, epoch, itr, losses):
        """The per-iteration line into ``train_logs.txt`` (file only), ``train_losses.csv`` and
        TensorBoard."""
        parts = [
            f'Epoch {epoch}/{cfg.end_epoch} itr {itr}/{self.itr_per_epoch}:',
            'lr: %g' % self.get_lr(),
            'speed: %.2f(%.2fs r%.2f)s/itr' % (self.tot_timer.average_time, self.gpu_timer.average_time,
                                               self.read_timer.average_time),
            '%.2fh/epoch' % (self.tot_timer.average_time / 3600. * self.itr_per_epoch),
        ]
        parts += ['%s: %.4f' % ('loss_' + key, value) for key, value in losses.items()]
        self.logger.info(' '.join(parts), console=False)
        if self.monitor is not None:
            self.monitor.record(epoch, itr, self.global_step, self.get_lr(), losses)

    def close(self):
        if self.monitor is not None:
            self.monitor.close()
        super().close()
