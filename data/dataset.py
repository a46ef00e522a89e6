"""Dataset plumbing shared by every loader: options, per-sample seeding and dataset mixing.

Datasets receive a ``common.options.DataOptions`` (``options``) in their constructor and
keep it as ``self.options``; everything after construction (samples, evaluation,
pictures) reads only that record, so a DataLoader worker gets its options with the
dataset it unpickles.  ``resolve_data_options`` is the one place where a dataset
constructor falls back to the run configuration.
"""
import zlib

import numpy as np
import torch

from common.utils.smpl import get_smpl


def resolve_data_options(options=None):
    """``options``, or the run configuration's ``cfg.data_options()`` when None (constructors only)."""
    if options is not None:
        return options
    from main.config import cfg  # the configuration edge: only dataset constructors come here
    return cfg.data_options()


def body_model(options):
    """The shared ``common.utils.smpl.SMPL`` wrapper of ``options.body_model``."""
    return get_smpl(options.body_model)


def fetch_visit(dataset, index, visit):
    """``dataset[index]`` for the visit ``visit`` (tuple of ints, see ``SeededDataset``).

    Datasets without ``get_sample`` (e.g. test sets, foreign datasets) take no visit key.
    """
    get_sample = getattr(dataset, 'get_sample', None)
    if get_sample is None:
        return dataset[index]
    return get_sample(index, visit)


class SeededDataset(torch.utils.data.Dataset):
    """Base class giving each sample its own random generator.

    Subclasses set ``self.options`` (a ``DataOptions``) in their constructor.  With
    ``options.seed`` set, the generator of sample ``index`` in epoch ``epoch`` is
    seeded by (seed, dataset name, epoch, index, stream, *visit), so a batch does not
    depend on the number of workers or processes, nor on an interruption and resume.
    ``visit`` is empty for a sample's first visit in an epoch; a balanced
    ``MultipleDatasets`` that visits a member's sample again in the same epoch passes the
    visit's slot in that member (unique per visit), so each repeat draws afresh.  With
    ``seed = None`` every call draws fresh OS entropy, as the original did.
    """

    epoch = 0
    options = None

    def set_epoch(self, epoch):
        """Select the epoch whose random draws ``__getitem__`` reproduces."""
        self.epoch = int(epoch)

    def sample_rng(self, index, stream=0, visit=()):
        """``np.random.Generator`` for one sample (``stream`` separates independent uses).

        ``visit``: tuple of ints naming a repeated visit (empty: the first one).
        """
        seed = self.options.seed
        if seed is None:
            return np.random.default_rng()
        name_key = zlib.crc32(type(self).__name__.encode())
        return np.random.default_rng([int(seed), name_key, self.epoch, int(index), int(stream),
                                      *(int(v) for v in visit)])


class MultipleDatasets(SeededDataset):
    """Mixes datasets (docs/METHOD.md, "Training samples"); members may themselves be ``MultipleDatasets``.

    ``make_same_len=False`` concatenates: length = sum of lengths.  ``make_same_len=True``
    balances: with ``L`` the longest member's length and ``n`` members the length is ``n * L``;
    index ``i`` goes to member ``i // L`` at local index ``k = i % L``, cycling through the
    member (``k % len``) except in its last incomplete cycle, where the local index is a
    uniform random pick.  That pick comes from ``sample_rng`` (seeded by ``options.seed``,
    epoch and index when the seed is set; ``options`` None: the run configuration's).

    Repeats: slot ``k >= len`` of a member is a repeated visit; the member's sample gets
    the visit key ``visit + (k,)`` (``get_sample``), so its random draws differ from those
    of the other visits in the epoch.  The first ``len`` slots pass ``visit`` unchanged:
    their draws are those of the member's own ``__getitem__``.

    Padding rounds: an index ``i >= len(self)`` is a later visit of sample ``i % len(self)``
    in padding round ``r = i // len(self)`` (a distributed sampler pads an epoch this way so
    every process runs the same number of steps).  It is the same sample, located as the
    first visit is, with the member visit key extended by ``(0, r)``.  Repeat slots are
    ``>= 1``, so a 0 in a key only ever starts a padding round and no two visits share a key.
    ``len(self)`` is unchanged.
    """

    def __init__(self, dbs, make_same_len=True, options=None):
        self.options = resolve_data_options(options)
        self.dbs = list(dbs)
        if not self.dbs:
            raise ValueError('MultipleDatasets needs at least one dataset.')
        self.db_lengths = [len(db) for db in self.dbs]
        if make_same_len and min(self.db_lengths) == 0:
            empty = [type(db).__name__ for db, n in zip(self.dbs, self.db_lengths) if n == 0]
            raise ValueError(f'MultipleDatasets(make_same_len=True) got empty dataset(s) {empty}: '
                             'a balanced mix needs samples in every member.')
        self.make_same_len = bool(make_same_len)
        self.db_num = len(self.dbs)
        self.max_db_data_num = max(self.db_lengths)
        self.db_len_cumsum = np.cumsum(self.db_lengths)

    def __len__(self):
        if self.make_same_len:
            return self.max_db_data_num * self.db_num
        return int(self.db_len_cumsum[-1])

    def set_epoch(self, epoch):
        """Set the epoch here and in every member (their per-sample seeds follow it)."""
        super().set_epoch(epoch)
        for db in self.dbs:
            if hasattr(db, 'set_epoch'):
                db.set_epoch(epoch)

    def locate_visit(self, index, visit=()):
        """Global ``index`` -> (member index, local index, the member sample's visit key)."""
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for MultipleDatasets of length {len(self)}')
        if not self.make_same_len:
            db_idx = int(np.searchsorted(self.db_len_cumsum, index, side='right'))
            start = int(self.db_len_cumsum[db_idx - 1]) if db_idx > 0 else 0
            return db_idx, index - start, tuple(visit)
        db_idx, slot = divmod(index, self.max_db_data_num)
        db_len = self.db_lengths[db_idx]
        member_visit = tuple(visit) if slot < db_len else tuple(visit) + (slot,)
        if slot >= db_len * (self.max_db_data_num // db_len):
            return db_idx, int(self.sample_rng(index, visit=visit).integers(0, db_len)), member_visit
        return db_idx, slot % db_len, member_visit

    def split_padding_round(self, index):
        """``index`` -> (padding round, index in ``range(len(self))``); round 0 is the epoch itself."""
        if index < 0 or len(self) == 0:
            raise IndexError(f'index {index} out of range for MultipleDatasets of length {len(self)}')
        return divmod(int(index), len(self))

    def get_sample(self, index, visit=()):
        """The sample at global ``index`` for the visit ``visit`` (see the class docstring)."""
        padding_round, index = self.split_padding_round(index)
        db_idx, local, member_visit = self.locate_visit(index, visit)
        if padding_round:
            member_visit = member_visit + (0, padding_round)
        return fetch_visit(self.dbs[db_idx], local, member_visit)

    def __getitem__(self, index):
        return self.get_sample(index)

    def __iter__(self):
        """One epoch's samples in index order (``__getitem__`` alone would never raise
        IndexError past the end, since such indices are padding visits)."""
        return (self[index] for index in range(len(self)))
