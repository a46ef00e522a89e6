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
* :func:`convert_sync_batchnorm`: synchronised batch norm, PyTorch's ``SyncBatchNorm`` on
  CUDA and :class:`CPUSyncBatchNorm` on the CPU with gloo (PyTorch's needs a GPU);
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


def broadcast_module_buffers(module, names=None, src=0):
    """Copy rank ``src``'s buffers (those in ``names``, default all) to every rank."""
    if not is_distributed():
        return
    for name, buf in module.named_buffers():
        if names is None or name in names:
            dist.broadcast(buf, src=src)


def shared_seed(seed):
    """``seed`` itself, or (``None``) one fresh random seed drawn by rank 0 and shared."""
    if seed is not None:
        return int(seed)
    return int(broadcast_object(int.from_bytes(os.urandom(4), 'little')))


def batchnorm_statistic_names(module):
    """Buffer names of ``module`` that belong to BatchNorm layers (running statistics)."""
    names = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            names.update(f'{prefix}.{n}' if prefix else n for n, _ in sub.named_buffers(recurse=False))
    return names


def constant_buffer_names(module):
    """Buffer names that training never changes (body model, regressors, adjacency): DDP
    need not broadcast them every step, since every rank builds them from the same files."""
    stats = batchnorm_statistic_names(module)
    return [name for name, _ in module.named_buffers() if name not in stats]


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
        """The whole epoch's index order (padded), shared by every rank."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(int(self.epoch_seed(self.epoch)))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        padding = len(self) * self.num_replicas - self.num_samples
        while padding > 0:  # more replicas than samples needs several rounds
            order += order[:padding]
            padding = len(self) * self.num_replicas - len(order)
        return order

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
class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of every rank's input is the sum of
    all ranks' output gradients (each rank's loss depends on the shared sum)."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor):
    """Sum of ``tensor`` over ranks, differentiable (identity outside a job)."""
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor


def sync_batch_norm_cpu(x, running_mean, running_var, weight, bias, momentum, eps):
    """Training-mode batch norm with statistics over every rank's batch (any device, gloo).

    x: (N, C, *).  Mean first, then the centred squares (two all-reduces: the variance
    is as accurate as a single process's).  ``running_*`` (C,) are updated in place with
    the unbiased variance, as ``BatchNorm`` does.  Returns the normalised ``x``.
    """
    channels = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, channels] + [1] * (x.dim() - 2)
    count = x.new_tensor([x.numel() // channels])
    packed = all_reduce_sum(torch.cat([x.sum(dims), count]))
    total = packed[-1].detach()
    if float(total) < 2:
        raise ValueError(f'SyncBatchNorm needs more than 1 value per channel over all ranks, got {int(total)}.')
    mean = packed[:-1] / total
    centred = x - mean.view(shape)
    var = all_reduce_sum(centred.pow(2).sum(dims)) / total
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape) + bias.view(shape)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
            unbiased = var.detach() * (total / (total - 1))
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return out


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any input rank >= 2) whose training statistics span every rank of the
    process group, for CPU tensors and gloo (``torch.nn.SyncBatchNorm`` needs a GPU, and
    DistributedDataParallel refuses it on CPU modules).

    Outside a job of several ranks, or in eval mode, it is plain batch norm.  Parameters,
    buffers and state_dict keys are BatchNorm's.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input):
        if not (self.training and is_distributed() and get_world_size() > 1):
            return super().forward(input)
        if input.device.type != 'cpu':
            raise RuntimeError('CPUSyncBatchNorm got a CUDA tensor: convert a CUDA model with '
                               'convert_sync_batchnorm after moving it to its device.')
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        track = self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        return sync_batch_norm_cpu(input, self.running_mean if track else None,
                                   self.running_var if track else None, self.weight, self.bias,
                                   factor, self.eps)


def is_sync_batchnorm(module):
    """True for ``torch.nn.SyncBatchNorm`` and :class:`CPUSyncBatchNorm` layers."""
    return isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm))


def _module_device(module):
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device('cpu')


def _to_cpu_sync(module):
    """:class:`CPUSyncBatchNorm` sharing ``module``'s parameters and buffers (same tensors)."""
    converted = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
    if module.affine:
        converted.weight = module.weight
        converted.bias = module.bias
    converted.running_mean = module.running_mean
    converted.running_var = module.running_var
    converted.num_batches_tracked = module.num_batches_tracked
    converted.train(module.training)
    return converted


def convert_sync_batchnorm(module):
    """Make every BatchNorm{1,2,3}d of ``module`` synchronised over the process group, in place.

    A CUDA module gets ``torch.nn.SyncBatchNorm`` (PyTorch's kernels, NCCL); a CPU module
    :class:`CPUSyncBatchNorm` (gloo).  Both reuse the old parameters and buffers (an
    optimizer built before keeps working; the state_dict keys do not change).  Convert
    after moving the model to its device.  Returns the module (a new one only when
    ``module`` itself is a BatchNorm).
    """
    if _module_device(module).type != 'cpu':
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_sync_batchnorm(module):
        return _to_cpu_sync(module)
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


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

