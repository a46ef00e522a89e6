"""Device selection and mixed-precision helpers shared by the training and test drivers.

The device is chosen once per run from the ``--gpu`` ids (none given: the first CUDA
device, else the CPU, said in one note; under torchrun: one device per process, by
``LOCAL_RANK``, see :func:`select_rank_device`).  CUDA devices are addressed by their id
(``cuda:<id>``); ``CUDA_VISIBLE_DEVICES`` is neither needed nor changed.  With ``--gpu``
but without CUDA the run falls back to the CPU with one warning, and ``--amp`` is then
ignored with one warning.
"""
from dataclasses import dataclass, field

import torch

from common.utils.gpu_ids import parse_gpu_ids


@dataclass
class DeviceSetup:
    """Result of :func:`select_device`.

    ``device`` is where the model and the batches live; ``device_ids`` lists the CUDA
    ids to spread a batch over (empty on the CPU); ``notes`` (information) and
    ``warnings`` are messages the caller should log once.
    """
    device: torch.device
    device_ids: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def num_devices(self):
        """Number of devices that share a batch (1 on the CPU)."""
        return max(1, len(self.device_ids))

    @property
    def is_cuda(self):
        return self.device.type == 'cuda'


def select_device(gpu_ids):
    """Pick the run's device from a ``--gpu`` string ('0', '0,1', '0-3').

    ``None`` (no ``--gpu``): the first CUDA device if there is one, else the CPU, with a
    note saying which.  Returns a :class:`DeviceSetup`.  Raises ``ValueError`` for a
    malformed string or an id that no visible CUDA device has.
    """
    if gpu_ids is None:
        return default_device()
    ids = [int(i) for i in parse_gpu_ids(gpu_ids).split(',')]
    if not torch.cuda.is_available():
        return DeviceSetup(
            torch.device('cpu'), [],
            [f"CUDA is not available: running on the CPU (--gpu {gpu_ids} is ignored)."])
    count = torch.cuda.device_count()
    bad = [i for i in ids if i >= count]
    if bad:
        raise ValueError(
            f"--gpu {gpu_ids}: no CUDA device with id {', '.join(map(str, bad))}; "
            f"{count} device(s) are visible (ids 0..{count - 1}).")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpu {gpu_ids}: a device id is repeated.")
    return DeviceSetup(torch.device('cuda', ids[0]), ids, [])


def default_device():
    """The device without ``--gpu``: CUDA device 0 if CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return DeviceSetup(torch.device('cuda', 0), [0],
                           notes=['--gpu not given: using the first CUDA device (--gpu chooses others).'])
    return DeviceSetup(torch.device('cpu'), [], notes=['device: cpu (no CUDA device)'])


def select_rank_device(gpu_ids, local_rank):
    """Device of one torchrun process: CUDA id ``ids[local_rank]`` of the ``--gpu`` list
    (``None``: id ``local_rank``), or the CPU when CUDA is unavailable.

    Returns a :class:`DeviceSetup` with at most one id (one process drives one device).
    Raises ``ValueError`` when the list or the visible devices are too few for
    ``local_rank``.
    """
    local_rank = int(local_rank)
    if gpu_ids in (None, ''):
        ids = None
    else:
        ids = [int(i) for i in parse_gpu_ids(gpu_ids).split(',')]
    if not torch.cuda.is_available():
        return DeviceSetup(torch.device('cpu'), [],
                           ["CUDA is not available: this process runs on the CPU (gloo backend)."])
    if ids is not None:
        if len(set(ids)) != len(ids):
            raise ValueError(f"--gpu {gpu_ids}: a device id is repeated.")
        if local_rank >= len(ids):
            raise ValueError(
                f"--gpu {gpu_ids} lists {len(ids)} id(s) but this is local process {local_rank}: "
                "list one GPU per process of the node (--nproc_per_node), or leave --gpu out "
                "to use GPU <LOCAL_RANK>.")
        device_id = ids[local_rank]
    else:
        device_id = local_rank
    count = torch.cuda.device_count()
    if device_id >= count:
        raise ValueError(
            f"Local process {local_rank} would use CUDA device {device_id}, but {count} device(s) "
            f"are visible (ids 0..{count - 1}): start at most {count} processes per node.")
    return DeviceSetup(torch.device('cuda', device_id), [device_id], [])


def resolve_amp(requested, device):
    """Whether AMP is used on ``device``: ``(enabled, warning_or_None)``.

    AMP (float16 autocast + GradScaler) is a CUDA feature here; on the CPU a request
    is ignored with a warning.
    """
    if not requested:
        return False, None
    if device.type != 'cuda':
        return False, "--amp is ignored on the CPU: training runs in float32."
    return True, None


def autocast(device, enabled, dtype=torch.float16):
    """Autocast context of the original (float16 on CUDA; ``dtype`` may choose bfloat16) or a
    no-op when disabled."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=bool(enabled))


def make_grad_scaler(device, enabled, init_scale=1024.0):
    """GradScaler for ``device``; disabled it is the identity (``step`` = ``optimizer.step``)."""
    return torch.amp.GradScaler(device.type, init_scale=float(init_scale), enabled=bool(enabled))


def move_to_device(batch, device, non_blocking=False):
    """Copy every tensor of a (nested) dict/list batch to ``device``; other values unchanged."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch
