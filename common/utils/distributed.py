"""Multi-process (torchrun / DistributedDataParallel) support for the drivers.

A run is distributed when ``torchrun`` (``python -m torch.distributed.run``) started it,
i.e. when ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` are in the environment.  Each
process then drives one device: ``cuda:<id>`` chosen by ``LOCAL_RANK`` (NCCL), or the
CPU (gloo).  Nothing here changes ``CUDA_VISIBLE_DEVICES``.

What this module gives the drivers:

* :func:`init_distributed` / :func:`cleanup`: the process group, idempotent.
* rank queries (:func:`get_rank`, :func:`get_world_size`, :func:`is_main_process`) that
  also answer in a plain single-process run;
* small collectives on Python objects and tensors (:func:`broadcast_object`,
  :func:`gather_objects`, :func:`all_reduce_mean_`, :func:`broadcast_module_buffers`);
* :class:`DistributedShardSampler` (training: disjoint per-rank shards of one seeded
  permutation per epoch) and :class:`ShardedBatchSampler` (testing: whole batches
  dealt out round-robin, so every batch is the one a single process would form);
* :func:`running_statistic_names` (the batch-norm statistics, the only buffers that change
  in training) for :func:`broadcast_module_buffers`;
* :func:`convert_sync_batchnorm`: PyTorch's ``SyncBatchNorm`` for a CUDA model (a CPU
  model gets a clear :class:`SyncBatchNormUnavailableError`);
* :class:`RankLogger`: the logger of ranks other than 0 (errors only, to stderr, tagged
  with the rank).
"""
import datetime
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

ENV_KEYS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')

_INITIALIZED_HERE = False


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (from torchrun's environment variables)."""
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self):
        return self.rank == 0


# ------------------------------------------------------------ environment
def launched_by_torchrun(environ=None):
    """True when the launcher's variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` are set."""
    environ = os.environ if environ is None else environ
    return all(key in environ for key in ENV_KEYS)


def env_info(environ=None):
    """:class:`DistInfo` from the environment, or ``None`` outside torchrun.

    Raises ``ValueError`` for malformed values (e.g. ``LOCAL_RANK=x``).
    """
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return None
    try:
        rank, local_rank, world = (int(environ[k]) for k in ENV_KEYS)
        local_world = int(environ.get('LOCAL_WORLD_SIZE', world))
    except ValueError as exc:
        shown = ', '.join(f'{k}={environ.get(k)!r}' for k in ENV_KEYS + ('LOCAL_WORLD_SIZE',))
        raise ValueError(f'Malformed torchrun environment ({shown}): {exc}') from exc
    if not (0 <= rank < world and 0 <= local_rank < local_world):
        raise ValueError(f'Inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, '
                         f'LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}.')
    return DistInfo(rank, world, local_rank, local_world)


def default_backend(device):
    """``'nccl'`` for a CUDA device, ``'gloo'`` otherwise."""
    return 'nccl' if torch.device(device).type == 'cuda' else 'gloo'


def init_distributed(device, backend=None, timeout_s=None):
    """Join the process group of a torchrun job (``env://`` rendezvous); idempotent.

    ``device`` is this process's device (``cuda:<id>`` binds NCCL to it); ``backend``
    defaults to :func:`default_backend`.  ``timeout_s`` bounds every collective
    (PyTorch's default when None).  Returns the :class:`DistInfo`.
    """
    global _INITIALIZED_HERE
    info = env_info()
    if info is None:
        raise RuntimeError('init_distributed needs the environment of torchrun '
                           f'({", ".join(ENV_KEYS)}, MASTER_ADDR, MASTER_PORT).')
    if dist.is_initialized():
        return info
    device = torch.device(device)
    kwargs = {}
    if timeout_s is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=float(timeout_s))
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        kwargs['device_id'] = device
    dist.init_process_group(backend=backend or default_backend(device), **kwargs)
    _INITIALIZED_HERE = True
    return info


def cleanup():
    """Leave the process group if :func:`init_distributed` created it."""
    global _INITIALIZED_HERE
    if _INITIALIZED_HERE and dist.is_initialized():
        dist.destroy_process_group()
    _INITIALIZED_HERE = False


def is_distributed():
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    """Rank 0, or a plain single-process run."""
    return get_rank() == 0


def local_info():
    """:class:`DistInfo` of this process (``DistInfo(0, 1, 0, 1)`` outside a job)."""
    if not is_distributed():
        return DistInfo(0, 1, 0, 1)
    info = env_info()
    if info is None:  # a group made by other means: no node layout known
        return DistInfo(get_rank(), get_world_size(), 0, 1)
    return DistInfo(get_rank(), get_world_size(), info.local_rank, info.local_world_size)


# ------------------------------------------------------------ collectives
def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src`` on every rank (picklable objects); identity outside a job."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj, dst=0):
    """List of every rank's ``obj`` (in rank order) on rank ``dst``, ``None`` elsewhere."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_mean_(tensor):
    """Average ``tensor`` over ranks in place (NaN/inf on any rank spread to all); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(get_world_size())
    return tensor


def buffer_groups(buffers):
    """``buffers`` grouped by (device, dtype), each group in the given order: the unit that
    :func:`flatten_buffers` joins into one tensor."""
    groups = {}
    for buffer in buffers:
        groups.setdefault((buffer.device, buffer.dtype), []).append(buffer)
    return list(groups.values())


def flatten_buffers(buffers):
    """One flat copy of a group of :func:`buffer_groups`."""
    return torch.cat([buffer.detach().reshape(-1) for buffer in buffers])


@torch.no_grad()
def unflatten_into(buffers, flat):
    """Write ``flat`` (as made by :func:`flatten_buffers`) back into ``buffers``, in place."""
    for buffer, value in zip(buffers, flat.split([buffer.numel() for buffer in buffers])):
        buffer.copy_(value.view_as(buffer))


def broadcast_module_buffers(module, names=None, src=0):
    """Copy rank ``src``'s buffers (those in ``names``, default all) to every rank, in place.

    Buffers of one device and dtype travel together in one flat tensor (one collective
    each), so hundreds of small statistics cost a few broadcasts.  No-op outside a job.
    """
    if not is_distributed():
        return
    wanted = None if names is None else set(names)
    for buffers in buffer_groups(buf for name, buf in module.named_buffers() if wanted is None or name in wanted):
        flat = flatten_buffers(buffers)
        dist.broadcast(flat, src=src)
        unflatten_into(buffers, flat)


def shared_seed(seed):
    """``seed`` itself, or (``None``) one fresh random seed drawn by rank 0 and shared."""
    if seed is not None:
        return int(seed)
    return int(broadcast_object(int.from_bytes(os.urandom(4), 'little')))


RUNNING_STATISTICS = ('running_mean', 'running_var', 'num_batches_tracked')


def running_statistics(module):
    """``[(name, buffer), ...]``: ``module``'s batch-norm running statistics (``...running_mean``,
    ``...running_var``, ``...num_batches_tracked``), the only buffers training changes, in module
    order.  Plain, synchronised and any custom batch norm keeping BatchNorm's buffer names are
    covered."""
    return [(name, buffer) for name, buffer in module.named_buffers()
            if name.rsplit('.', 1)[-1] in RUNNING_STATISTICS]


def running_statistic_names(module):
    """Names of :func:`running_statistics`."""
    return [name for name, _ in running_statistics(module)]


# ---------------------------------------------------------------- samplers
class DistributedShardSampler(torch.utils.data.Sampler):
    """Training sampler: rank ``rank`` of ``num_replicas`` takes every ``num_replicas``-th
    index of one permutation of ``range(num_samples)``.

    The permutation of epoch ``e`` is ``torch.randperm(num_samples)`` drawn from a
    ``torch.Generator`` seeded with ``epoch_seed(e)``, exactly what a shuffling
    DataLoader whose generator has that seed draws.  It is padded with its own first
    indices to a multiple of ``num_replicas`` (every rank then runs the same number of
    iterations, which DDP needs).  So the shards are disjoint apart from the padding,
    their union is the single-process epoch, and step ``k`` of all ranks together sees
    the batch ``k`` a single process with batch ``num_replicas × per-rank batch`` sees.
    Call :meth:`set_epoch` before each epoch.

    A padding copy of index ``i`` in padding round ``r >= 1`` is yielded as
    ``i + r * num_samples``: the dataset (``data.dataset.MultipleDatasets``) reads it as a
    later visit of ``i``, so the copy draws its augmentation afresh instead of repeating
    the first visit's.  A single process never pads.
    """

    def __init__(self, num_samples, num_replicas, rank, epoch_seed, shuffle=True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} is outside 0..{num_replicas - 1}')
        self.num_samples = int(num_samples)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch_seed = epoch_seed
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return math.ceil(self.num_samples / self.num_replicas)

    def epoch_order(self):
        """The whole epoch's index order (padded, see the class docstring), shared by every rank."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(int(self.epoch_seed(self.epoch)))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        # Position j >= num_samples copies order[j % num_samples] in padding round
        # j // num_samples (several rounds when there are more replicas than samples).
        n = self.num_samples
        return [order[j % n] + (j // n) * n for j in range(len(self) * self.num_replicas)]

    def __iter__(self):
        return iter(self.epoch_order()[self.rank::self.num_replicas])


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Test batch sampler: the sequential batches ``range(num_samples)`` cut into
    ``batch_size`` pieces, batch ``k`` going to rank ``k % num_replicas``.

    Each batch is the one a single process forms, so per-sample results are identical
    and the gathered batches, sorted by :meth:`batch_ids`, restore the single-process order.
    """

    def __init__(self, num_samples, batch_size, num_replicas, rank):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} is outside 0..{num_replicas - 1}')
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)

    def batch_ids(self):
        """Global ids ``k`` of this rank's batches, in order (batch ``k`` starts at ``k*batch_size``)."""
        total = math.ceil(self.num_samples / self.batch_size)
        return list(range(self.rank, total, self.num_replicas))

    def __len__(self):
        return len(self.batch_ids())

    def __iter__(self):
        for k in self.batch_ids():
            start = k * self.batch_size
            yield list(range(start, min(start + self.batch_size, self.num_samples)))


# ------------------------------------------------------------- SyncBatchNorm
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNormUnavailableError(RuntimeError):
    """Synchronised batch norm was asked for a module that is not on a CUDA device."""


def count_batchnorm_layers(module):
    """Number of plain ``BatchNorm{1,2,3}d`` layers in ``module`` (those a conversion replaces)."""
    return sum(isinstance(m, BATCHNORM_TYPES) and not isinstance(m, nn.SyncBatchNorm) for m in module.modules())


def module_device(module):
    """Device of ``module``'s first parameter or buffer (the CPU for an empty module)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device('cpu')


def convert_sync_batchnorm(module):
    """Make every BatchNorm layer of a CUDA ``module`` synchronised over the process group.

    PyTorch's ``torch.nn.SyncBatchNorm`` (NCCL) replaces each layer and reuses its
    parameters and buffers, so an optimizer built before keeps working and the state_dict
    keys do not change.  Convert after moving the model to its device.  PyTorch's layer
    runs on GPUs only: a module on the CPU raises :class:`SyncBatchNormUnavailableError`
    (a CPU job trains with per-process batch norm when the option is off).
    """
    device = module_device(module)
    if device.type != 'cuda':
        raise SyncBatchNormUnavailableError(
            f'Synchronised BatchNorm (sync_bn) needs CUDA devices: torch.nn.SyncBatchNorm does not run '
            f'on {device.type} tensors. Set sync_bn: false for a CPU (gloo) job.')
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


# ----------------------------------------------------------------- logging
class RankLogger:
    """Logger of ranks other than 0: the ColorLogger interface without a file.  Info and
    warning lines are dropped (rank 0 logs the same ones); errors go to stderr as
    ``[rank r] ERR: ...``."""

    def __init__(self, rank):
        self.rank = int(rank)
        self.path = None

    def _emit(self, level, msg):
        print(f'[rank {self.rank}] {level}: {msg}', file=sys.stderr, flush=True)

    def debug(self, msg):
        pass

    def info(self, msg, console=True):
        pass

    def warning(self, msg):
        pass

    def error(self, msg):
        self._emit('ERR', msg)

    def critical(self, msg):
        self._emit('CRI', msg)

    def close(self):
        pass

