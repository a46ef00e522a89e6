"""Random seeds of a run: one integer option determines every generator.

A seeded run derives a separate seed for each purpose and epoch from the run's
seed (:func:`derive_seed`), so an epoch's random draws do not depend on how many
draws earlier epochs made; that is what lets a resumed run continue bit for bit.
"""
import random

import numpy as np
import torch


def derive_seed(seed, *parts):
    """A 32-bit seed determined by ``seed`` and the integer ``parts`` (e.g. a purpose and an epoch)."""
    return int(np.random.SeedSequence([int(seed), *[int(p) for p in parts]]).generate_state(1)[0])


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's global generators (torch's covers every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_dataset_epoch(dataset, epoch):
    """Call ``set_epoch(epoch)`` on a dataset and on every dataset a mixer wraps.

    Mixers keep their children in ``dbs`` or ``datasets``; each dataset is visited once
    even when it appears in several places.
    """
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


def seed_worker(worker_id):
    """DataLoader ``worker_init_fn``: NumPy's and Python's generators seeded from the
    worker's torch seed (which the loader derives from its generator and ``worker_id``).

    Datasets carry their own options, so a worker needs nothing else from the parent.
    """
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
