"""A synchronised batch norm for CPU tensors and gloo, used only by the multi-process tests.

PyTorch's ``torch.nn.SyncBatchNorm`` runs on GPUs only (and DistributedDataParallel refuses it
in a CPU module), so the gloo tests of the trainer's ``sync_bn`` path convert the model with
:func:`convert_to_cpu_sync_batchnorm` instead: ``Trainer(sync_batchnorm_converter=...)`` or
``main.train.main(argv, sync_batchnorm_converter=...)``.

:class:`CPUSyncBatchNorm` is a plain module with BatchNorm's parameter and buffer names, so
the state_dict keys do not change.  In training inside a job of several ranks it normalises
with the statistics of every rank's batch; otherwise it is plain batch norm.
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _in_a_job():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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
    return _AllReduceSum.apply(tensor) if _in_a_job() else tensor


def sync_batch_norm_cpu(x, running_mean, running_var, weight, bias, momentum, eps):
    """Training-mode batch norm with statistics over every rank's batch.

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


class CPUSyncBatchNorm(nn.Module):
    """Batch norm (input rank >= 2) sharing the parameters and buffers of ``bn`` (a
    ``BatchNorm{1,2,3}d``), with statistics over every rank of the process group in training."""

    def __init__(self, bn):
        super().__init__()
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.affine, self.track_running_stats = bn.affine, bn.track_running_stats
        self.weight, self.bias = (bn.weight, bn.bias) if bn.affine else (None, None)
        for name in ('running_mean', 'running_var', 'num_batches_tracked'):
            self.register_buffer(name, getattr(bn, name) if bn.track_running_stats else None)
        self.train(bn.training)

    def _momentum(self):
        """BatchNorm's averaging factor; counts the batch when statistics are tracked."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def forward(self, x):
        if x.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {x.dim()}D input)')
        factor = self._momentum()
        track = self.track_running_stats
        if self.training and _in_a_job():
            return sync_batch_norm_cpu(x, self.running_mean if track else None,
                                       self.running_var if track else None, self.weight, self.bias,
                                       factor, self.eps)
        use_batch_stats = self.training or self.running_mean is None
        keep = not self.training or track
        return F.batch_norm(x, self.running_mean if keep else None, self.running_var if keep else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)


def convert_to_cpu_sync_batchnorm(module):
    """Replace every ``BatchNorm{1,2,3}d`` of ``module`` by :class:`CPUSyncBatchNorm`, in place
    (a new module only when ``module`` itself is one); parameters and buffers are shared."""
    if isinstance(module, BATCHNORM_TYPES):
        return CPUSyncBatchNorm(module)
    for name, child in module.named_children():
        new_child = convert_to_cpu_sync_batchnorm(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module
