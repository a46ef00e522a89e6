"""Dataset plumbing shared by every loader: per-sample seeding and dataset mixing."""
import zlib

import numpy as np
import torch

from main.config import cfg


class SeededDataset(torch.utils.data.Dataset):
    """Base class giving each sample its own random generator.

    With ``cfg.seed`` set, the generator of sample ``index`` in epoch ``epoch`` is
    seeded by (seed, dataset name, epoch, index), so a batch does not depend on the
    number of workers or processes, nor on an interruption and resume.  With
    ``cfg.seed = None`` every call draws fresh OS entropy, as the original did.
    """

    epoch = 0

    def set_epoch(self, epoch):
        """Select the epoch whose random draws ``__getitem__`` reproduces."""
        self.epoch = int(epoch)

    def sample_rng(self, index, stream=0):
        """``np.random.Generator`` for one sample (``stream`` separates independent uses)."""
        if cfg.seed is None:
            return np.random.default_rng()
        name_key = zlib.crc32(type(self).__name__.encode())
        return np.random.default_rng([int(cfg.seed), name_key, self.epoch, int(index), int(stream)])
