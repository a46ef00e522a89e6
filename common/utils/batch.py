"""Batch bookkeeping shared by the training and test drivers: the size of a batch,
how DataParallel splits it over devices, and cutting batched outputs into samples."""
import numpy as np
import torch


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


def to_numpy(value):
    """A tensor (any device, detached) or array-like as a NumPy array."""
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


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
