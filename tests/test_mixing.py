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
    with pytest.raises(IndexError):
        mix[len(mix)]


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
