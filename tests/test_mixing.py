"""MultipleDatasets (docs/METHOD.md, "Training samples"): indexing of both modes, seeded
fill-in picks, workers."""
import dataclasses

import numpy as np
import pytest
import torch

from data.dataset import MultipleDatasets, SeededDataset, resolve_data_options
from main.config import cfg

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')


class Numbered(SeededDataset):
    """``n`` samples; sample i is (tag, i, a random draw from its per-sample generator)."""

    def __init__(self, n, tag, options=None):
        self.options = resolve_data_options(options)
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(index)
        draw = self.sample_rng(index).random()
        return {'tag': self.tag, 'index': index, 'draw': np.float64(draw)}


def expected_balanced(lengths, index):
    """Straight-line re-derivation of the balanced mode: (dataset, local or None=random)."""
    longest = max(lengths)
    dataset, local = index // longest, index % longest
    full_cycles = longest // lengths[dataset]
    if local >= lengths[dataset] * full_cycles:
        return dataset, None
    return dataset, local % lengths[dataset]


def test_balanced_worked_example():
    mix = MultipleDatasets([Numbered(3, 'a'), Numbered(7, 'b')], make_same_len=True)
    assert len(mix) == 14
    assert [mix[i]['index'] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert all(mix[i]['tag'] == 'a' for i in range(7))
    assert mix[6]['index'] in (0, 1, 2)
    assert [mix[i]['index'] for i in range(7, 14)] == list(range(7))
    assert all(mix[i]['tag'] == 'b' for i in range(7, 14))


@pytest.mark.parametrize('lengths', [(2, 5, 4), (1, 6), (5, 5), (4, 9, 3)])
def test_balanced_indexing_matches_rule(lengths):
    mix = MultipleDatasets([Numbered(n, k) for k, n in enumerate(lengths)], make_same_len=True)
    assert len(mix) == len(lengths) * max(lengths)
    for i in range(len(mix)):
        sample = mix[i]
        dataset, local = expected_balanced(lengths, i)
        assert sample['tag'] == dataset
        if local is None:
            assert 0 <= sample['index'] < lengths[dataset]
        else:
            assert sample['index'] == local


@pytest.mark.parametrize('lengths', [(3, 7), (1, 1, 4), (6,)])
def test_concatenation_indexing(lengths):
    mix = MultipleDatasets([Numbered(n, k) for k, n in enumerate(lengths)], make_same_len=False)
    assert len(mix) == sum(lengths)
    expected = [(k, j) for k, n in enumerate(lengths) for j in range(n)]
    assert [(mix[i]['tag'], mix[i]['index']) for i in range(len(mix))] == expected
    assert [(s['tag'], s['index']) for s in mix] == expected  # iteration stops after one epoch
    # past the end: a padding round's visit of the same sample (see the padding tests below)
    assert (mix[len(mix)]['tag'], mix[len(mix)]['index']) == expected[0]
    with pytest.raises(IndexError):
        mix[-1]


def test_nested_sgre_composition():
    """balanced(concat(H36M, MuCo), concat(COCO, MPII)): length 2 * max(|A|, |B|), each half one group."""
    group_3d = MultipleDatasets([Numbered(2, 'h36m'), Numbered(3, 'muco')], make_same_len=False)
    group_2d = MultipleDatasets([Numbered(4, 'coco'), Numbered(4, 'mpii')], make_same_len=False)
    mix = MultipleDatasets([group_3d, group_2d], make_same_len=True)
    assert len(mix) == 16
    tags = [mix[i]['tag'] for i in range(16)]
    assert tags[:5] == ['h36m', 'h36m', 'muco', 'muco', 'muco']
    assert set(tags[5:8]) <= {'h36m', 'muco'}  # incomplete cycle: random picks in group A
    assert tags[8:] == ['coco'] * 4 + ['mpii'] * 4


def test_seeded_fill_in_picks_are_reproducible_and_vary_with_epoch():
    cfg.seed = 11
    mix = MultipleDatasets([Numbered(7, 'a'), Numbered(40, 'b')], make_same_len=True)
    random_slots = [i for i in range(40) if expected_balanced((7, 40), i)[1] is None]
    assert random_slots == [35, 36, 37, 38, 39]
    picks = [mix[i]['index'] for i in random_slots]
    again = MultipleDatasets([Numbered(7, 'a'), Numbered(40, 'b')], make_same_len=True)
    assert [again[i]['index'] for i in random_slots] == picks
    per_epoch = []
    for epoch in range(30):
        mix.set_epoch(epoch)
        per_epoch.append(tuple(mix[i]['index'] for i in random_slots))
    assert len(set(per_epoch)) > 1
    # Over many epochs every local index of dataset 0 is drawn (uniform on [0, 6]).
    assert set(np.concatenate(per_epoch).tolist()) == set(range(7))


def test_unseeded_fill_in_picks_stay_in_range():
    cfg.seed = None
    mix = MultipleDatasets([Numbered(3, 'a'), Numbered(7, 'b')], make_same_len=True)
    picks = {mix[6]['index'] for _ in range(200)}
    assert picks == {0, 1, 2}


def test_set_epoch_reaches_nested_members():
    leaves = [Numbered(2, 0), Numbered(3, 1), Numbered(4, 2)]
    mix = MultipleDatasets([MultipleDatasets(leaves[:2], make_same_len=False), leaves[2]], make_same_len=True)
    mix.set_epoch(5)
    assert mix.epoch == 5 and mix.dbs[0].epoch == 5
    assert all(leaf.epoch == 5 for leaf in leaves)


def test_balanced_rejects_empty_member():
    with pytest.raises(ValueError, match='empty'):
        MultipleDatasets([Numbered(0, 'a'), Numbered(3, 'b')], make_same_len=True)
    assert len(MultipleDatasets([Numbered(0, 'a'), Numbered(3, 'b')], make_same_len=False)) == 3


def _collect(dataset, workers):
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, num_workers=workers)
    batches = list(loader)
    return (torch.cat([b['tag'] for b in batches]), torch.cat([b['index'] for b in batches]),
            torch.cat([b['draw'] for b in batches]))


@pytest.mark.slow
def test_same_seed_same_samples_for_0_and_2_workers():
    cfg.seed = 5
    mix = MultipleDatasets([Numbered(3, 0), Numbered(7, 1)], make_same_len=True)
    mix.set_epoch(2)
    serial = _collect(mix, 0)
    parallel = _collect(mix, 2)
    for a, b in zip(serial, parallel):
        assert torch.equal(a, b)
    mix.set_epoch(3)
    other_epoch = _collect(mix, 0)
    assert not torch.equal(serial[2], other_epoch[2])


def test_seed_comes_from_the_options_not_the_global_configuration():
    """A dataset keeps the seed of its options: changing ``cfg`` afterwards changes nothing."""
    seeded = dataclasses.replace(cfg.data_options(), seed=7)
    dataset = Numbered(5, 'a', options=seeded)
    mix = MultipleDatasets([Numbered(2, 'b', options=seeded), dataset], make_same_len=True, options=seeded)
    draws = [dataset[i]['draw'] for i in range(5)]
    picks = [mix[i]['index'] for i in range(5)]
    cfg.seed = None
    assert [dataset[i]['draw'] for i in range(5)] == draws
    assert [mix[i]['index'] for i in range(5)] == picks
    other = Numbered(5, 'a', options=dataclasses.replace(seeded, seed=8))
    assert [other[i]['draw'] for i in range(5)] != draws


# ----------------------------------------------------------------- fresh draws on every visit
class VisitNumbered(Numbered):
    """``Numbered`` whose draws take the visit key a mixer passes (as the training sets do)."""

    def __getitem__(self, index):
        return self.get_sample(index)

    def get_sample(self, index, visit=()):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return {'tag': self.tag, 'index': index, 'draw': np.float64(self.sample_rng(index, visit=visit).random())}


def first_visit_reference_draw(seed, name, epoch, index, stream=0):
    """The per-sample draw keyed by (seed, name, epoch, index, stream): a first visit's draw, re-derived."""
    import zlib
    key = [seed, zlib.crc32(name.encode()), epoch, index, stream]
    return np.random.default_rng(key).random()


def sgre_mix(seed, small=3, large=10):
    """balanced(concat(3D-like), concat(2D-like)); the 2D-like group is cycled about large/small times."""
    options = dataclasses.replace(cfg.data_options(), seed=seed)
    group_3d = MultipleDatasets([VisitNumbered(large, '3d', options)], make_same_len=False, options=options)
    group_2d = MultipleDatasets([VisitNumbered(small, '2d', options)], make_same_len=False, options=options)
    return MultipleDatasets([group_3d, group_2d], make_same_len=True, options=options)


def test_repeated_visits_of_one_sample_draw_differently():
    mix = sgre_mix(seed=3)
    mix.set_epoch(4)
    samples = [mix[i] for i in range(len(mix))]
    small = [s for s in samples if s['tag'] == '2d']
    assert len(small) == 10
    for index in range(3):
        draws = [s['draw'] for s in small if s['index'] == index]
        assert len(draws) >= 3                      # cycled three times (plus random fill-ins)
        assert len(set(draws)) == len(draws), draws


def test_first_visits_keep_the_per_sample_key():
    """Only repeats change: a sample's first slot draws exactly as (seed, name, epoch, index)."""
    mix = sgre_mix(seed=3)
    mix.set_epoch(4)
    for i in range(len(mix)):
        member, slot = divmod(i, 10)
        sample = mix[i]
        if slot < (10 if member == 0 else 3):
            assert sample['draw'] == first_visit_reference_draw(3, 'VisitNumbered', 4, sample['index'])
        else:
            assert sample['draw'] != first_visit_reference_draw(3, 'VisitNumbered', 4, sample['index'])


def test_visit_draws_are_a_function_of_seed_epoch_and_position():
    """Access order, a fresh object (a resumed run, a worker's copy) and other epochs: as the rule says."""
    mix = sgre_mix(seed=9)
    mix.set_epoch(1)
    forward = [mix[i]['draw'] for i in range(len(mix))]
    backward = [mix[i]['draw'] for i in reversed(range(len(mix)))][::-1]
    resumed = sgre_mix(seed=9)
    resumed.set_epoch(1)
    assert forward == backward == [resumed[i]['draw'] for i in range(len(mix))]
    resumed.set_epoch(2)
    assert all(a != b for a, b in zip(forward, [resumed[i]['draw'] for i in range(len(mix))]))
    assert forward != [sgre_mix(seed=10)[i]['draw'] for i in range(len(mix))]


@pytest.mark.slow
def test_repeat_draws_are_independent_of_the_worker_count():
    cfg.seed = 5
    mix = MultipleDatasets([VisitNumbered(3, 0), VisitNumbered(7, 1)], make_same_len=True)
    mix.set_epoch(2)
    serial = _collect(mix, 0)
    for tag in (0, 1):
        draws = serial[2][serial[0] == tag].tolist()
        assert len(set(draws)) == len(draws)
    if torch.multiprocessing.get_start_method(allow_none=True) in (None, 'fork'):
        for a, b in zip(serial, _collect(mix, 2)):
            assert torch.equal(a, b)


def test_unseeded_visits_draw_fresh_entropy():
    cfg.seed = None
    mix = MultipleDatasets([VisitNumbered(3, 'a'), VisitNumbered(7, 'b')], make_same_len=True)
    assert mix[0]['draw'] != mix[0]['draw']


# ------------------------------------------------------------- padding rounds (distributed)
def visits_by_sample(mix, rounds):
    """{(tag, index): [draw, ...]} over the epoch and ``rounds - 1`` padding rounds after it."""
    draws = {}
    for i in range(rounds * len(mix)):
        sample = mix[i]
        draws.setdefault((sample['tag'], sample['index']), []).append(sample['draw'])
    return draws


def test_padding_rounds_revisit_the_same_sample_with_fresh_reproducible_draws():
    mix = sgre_mix(seed=3)
    mix.set_epoch(4)
    n = len(mix)
    assert n == 20  # unchanged by padding support
    for i in range(n):
        first = mix[i]
        for padding_round in (1, 2):
            copy = mix[i + padding_round * n]
            assert (copy['tag'], copy['index']) == (first['tag'], first['index'])  # the same sample
            assert copy['draw'] != first['draw']                                   # drawn afresh
    # no two visits of a sample share a key: within the epoch (repeats) and across rounds
    for key, draws in visits_by_sample(mix, rounds=3).items():
        assert len(set(draws)) == len(draws), key
    resumed = sgre_mix(seed=3)  # a fresh object (a worker's copy, a resumed run) draws the same
    resumed.set_epoch(4)
    assert all(resumed[i]['draw'] == mix[i]['draw'] for i in range(3 * n))


def test_padding_rounds_of_a_concatenation_and_out_of_range_indices():
    options = dataclasses.replace(cfg.data_options(), seed=7)
    group = MultipleDatasets([VisitNumbered(4, 'a', options), VisitNumbered(2, 'b', options)],
                             make_same_len=False, options=options)
    assert len(group) == 6
    for i in range(6):
        assert group[i + 6]['index'] == group[i]['index'] and group[i + 6]['draw'] != group[i]['draw']
        assert group[i]['draw'] == first_visit_reference_draw(7, 'VisitNumbered', 0, group[i]['index'])
    with pytest.raises(IndexError):
        group[-1]


def test_sharded_epoch_keeps_non_padded_draws_and_refreshes_padded_copies():
    """Three processes over the mix: every non-padded sample is the single process's, the
    padding copies are their first visit's sample with other draws."""
    from common.utils.distributed import DistributedShardSampler
    mix = sgre_mix(seed=11, small=3, large=7)  # 14 samples: 3 shards of 5, one padding copy
    mix.set_epoch(2)
    n = len(mix)
    single = {i: mix[i] for i in range(n)}
    sharded = []
    for rank in range(3):
        sampler = DistributedShardSampler(n, 3, rank, lambda epoch: 100 + epoch)
        sampler.set_epoch(2)
        replica = sgre_mix(seed=11, small=3, large=7)  # each process holds its own copy
        replica.set_epoch(2)
        sharded += [(i, replica[i]) for i in sampler]
    assert sorted(i for i, _ in sharded if i < n) == list(range(n))
    assert all(sample == single[i] for i, sample in sharded if i < n)
    padded = [(i, sample) for i, sample in sharded if i >= n]
    assert len(padded) == 1
    for i, sample in padded:
        first = single[i % n]
        assert (sample['tag'], sample['index']) == (first['tag'], first['index'])
        assert sample['draw'] != first['draw']
