"""Evaluation sets: testset lists, 3DPW-OC and 3DPW-PC (ROMP's protocol), one result file per
set and the summary table (data/registry.py, data/PW3D/PW3D.py, common/tester.py)."""
import json
import os
import shutil
from pathlib import Path

import pytest

from data.PW3D.PW3D import PW3D, in_subset
from data.registry import evaluation_names

# Where the copied synthetic tree's sequences go (split -> {old name: new name}) and its frame
# numbers ({new sequence: [new frame number for frame 0, 1, ...]}).
RENAMED = {
    'train': {'courtyard_arguing_00': 'courtyard_backpack_00'},                     # OC
    'validation': {'courtyard_jumpBench_01': 'courtyard_boxing_01',                  # not OC ('courtyard_box')
                   'downtown_walking_00': 'outdoors_climbing_02'},                   # OC
    'test': {'office_phoneCall_00': 'flat_guitar_01',                                # OC
             'downtown_arguing_00': 'downtown_bus_00'},                              # PC frames
}
FRAME_NUMBERS = {
    'courtyard_hug_00': [99, 100],          # PC range [100, 500): frame 100 only
    'courtyard_dancing_00': [369, 370],     # PC range [60, 370): frame 369 only
    'downtown_bus_00': [1619, 1620, 1899],  # PC range [1620, 1900): frames 1620 and 1899
}
OC_SEQUENCES = {'courtyard_backpack_00', 'outdoors_climbing_02', 'flat_guitar_01'}
PC_FRAMES = {('courtyard_hug_00', 100), ('courtyard_dancing_00', 369), ('downtown_bus_00', 1620),
             ('downtown_bus_00', 1899)}


def test_testset_names_and_the_crowd_option():
    assert evaluation_names('PW3D') == ['PW3D']
    assert evaluation_names('PW3D', crowd=True) == ['PW3D-crowd']           # the original's option
    assert evaluation_names(['PW3D', 'PW3D-OC', 'PW3D-PC', 'PW3D']) == ['PW3D', 'PW3D-OC', 'PW3D-PC']
    assert evaluation_names(['PW3D-OC', 'PW3D'], crowd=True) == ['PW3D-OC', 'PW3D-crowd']


def test_a_testset_list_and_a_single_name_are_both_valid_options(cfg_state, tmp_path):
    path = tmp_path / 'sets.yaml'
    path.write_text('testset: [PW3D, PW3D-crowd, PW3D-OC, PW3D-PC]\n')
    cfg_state.update(path)
    assert cfg_state.testset == ['PW3D', 'PW3D-crowd', 'PW3D-OC', 'PW3D-PC']
    path.write_text('testset: PW3D-OC\n')
    cfg_state.update(path)
    assert cfg_state.testset == 'PW3D-OC'


@pytest.mark.parametrize('sequence, frame, expected', [
    ('courtyard_hug_00', 99, False), ('courtyard_hug_00', 100, True), ('courtyard_hug_00', 499, True),
    ('courtyard_hug_00', 500, False), ('courtyard_basketball_00', 200, True), ('courtyard_basketball_00', 280, False),
    ('downtown_bus_00', 1899, True), ('courtyard_dancing_01', 59, False), ('courtyard_dancing_01', 269, True),
    ('courtyard_captureSelfies_00', 600, False), ('courtyard_hug_01', 200, False)])
def test_pc_frame_ranges_include_the_first_and_exclude_the_last_frame(sequence, frame, expected):
    assert in_subset('PC', sequence, frame) is expected


@pytest.mark.parametrize('sequence, expected', [
    ('courtyard_backpack_00', True), ('courtyard_basketball_01', True), ('downtown_stairs_00', True),
    ('outdoors_fencing_01', True), ('flat_packBags_00', True), ('outdoors_crosscountry_00', True),
    ('courtyard_boxing_00', False), ('courtyard_box', False), ('downtown_arguing_00', False),
    ('courtyard_hug_00', False), ('office_phoneCall_00', False)])
def test_oc_takes_whole_sequences_by_name_without_the_take_number(sequence, expected):
    assert in_subset('OC', sequence, 0) is expected


@pytest.fixture
def subset_tree(tmp_path, synthetic_data_root):
    """A data root whose PW3D tree is a copy of the synthetic one with sequences renamed into
    and out of 3DPW-OC and frame numbers around the 3DPW-PC ranges (``RENAMED``,
    ``FRAME_NUMBERS``); the other datasets are linked."""
    root = tmp_path / 'data'
    root.mkdir()
    for entry in Path(synthetic_data_root).iterdir():
        if entry.name != 'PW3D':
            (root / entry.name).symlink_to(entry)
    shutil.copytree(Path(synthetic_data_root) / 'PW3D', root / 'PW3D')
    data = root / 'PW3D' / 'data'
    for split, renames in RENAMED.items():
        path = data / f'3DPW_latest_{split}.json'
        db = json.loads(path.read_text())
        for image in db['images']:
            old_folder = data / 'imageFiles' / image['sequence']
            image['sequence'] = renames.get(image['sequence'], image['sequence'])
            numbers = FRAME_NUMBERS.get(image['sequence'])
            new_name = f'image_{numbers[image["frame_idx"]]:05d}.jpg' if numbers else image['file_name']
            target = data / 'imageFiles' / image['sequence'] / new_name
            target.parent.mkdir(exist_ok=True)
            shutil.copy(old_folder / image['file_name'], target)
            image['file_name'], image['frame_idx'] = new_name, None
        path.write_text(json.dumps(db))
    return root


def people(root, keep):
    """(split, annotation id, sequence, frame number) of the annotations of the tree's three
    split files for which ``keep(sequence, frame number)`` holds, read from the raw JSON."""
    found = []
    for split in ('train', 'validation', 'test'):
        db = json.loads((root / 'PW3D' / 'data' / f'3DPW_latest_{split}.json').read_text())
        images = {image['id']: image for image in db['images']}
        for ann in db['annotations']:
            image = images[ann['image_id']]
            frame = int(image['file_name'][len('image_'):-len('.jpg')])
            if keep(image['sequence'], frame):
                found.append((split, ann['id'], image['sequence'], frame))
    return found


@pytest.mark.parametrize('subset', ['OC', 'PC'])
def test_oc_and_pc_gather_their_people_from_all_three_splits(subset_tree, data_cfg, subset):
    data_cfg.data_dir = str(subset_tree)
    if subset == 'OC':
        expected = people(subset_tree, lambda sequence, frame: sequence in OC_SEQUENCES)
    else:
        expected = people(subset_tree, lambda sequence, frame: (sequence, frame) in PC_FRAMES)
    assert {split for split, *_ in expected} == ({'train', 'validation', 'test'} if subset == 'OC'
                                                 else {'validation', 'test'})
    with pytest.warns(UserWarning) if subset == 'OC' else _nothing():   # the flat_guitar_01 person without a pose
        dataset = PW3D(None, 'test', subset=subset)
    assert [(d['ann_id'], d['sequence']) for d in dataset.datalist] == [(aid, seq) for _, aid, seq, _ in expected]
    inputs, targets, meta_info = dataset[len(dataset) - 1]                   # the renamed image is read
    assert inputs['img'].shape == (3, 256, 256) and meta_info['aid'] == expected[-1][1]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_missing_split_file_is_named_with_the_alternative(subset_tree, data_cfg):
    data_cfg.data_dir = str(subset_tree)
    missing = subset_tree / 'PW3D' / 'data' / '3DPW_latest_train.json'
    missing.unlink()
    with pytest.raises(FileNotFoundError) as info:
        PW3D(None, 'test', subset='PC')
    assert str(missing) in str(info.value) and '3DPW_pc.json' in str(info.value)


def test_a_prebuilt_subset_file_replaces_the_three_splits(subset_tree, data_cfg):
    data_cfg.data_dir = str(subset_tree)
    data = subset_tree / 'PW3D' / 'data'
    shutil.copy(data / '3DPW_latest_validation.json', data / '3DPW_pc.json')
    (data / '3DPW_latest_train.json').unlink()           # not needed any more
    dataset = PW3D(None, 'test', subset='PC')
    assert [(d['sequence'], d['img_path'][-9:-4]) for d in dataset.datalist] == [
        ('courtyard_hug_00', '00100'), ('courtyard_hug_00', '00100'),
        ('courtyard_dancing_00', '00369'), ('courtyard_dancing_00', '00369')]


def test_a_subset_without_people_is_a_clear_error(data_cfg):
    from common.errors import DataError
    with pytest.raises(DataError, match='3DPW-OC: none of the people'):
        PW3D(None, 'test', subset='OC')        # the plain synthetic tree has no OC sequence


def test_crowd_true_still_selects_3dpw_crowd(data_cfg):
    data_cfg.crowd = True
    crowd = PW3D(None, 'test')
    assert crowd.subset == 'crowd' and crowd.data_split == 'validation'
    assert {d['sequence'] for d in crowd.datalist} == {'courtyard_hug_00', 'courtyard_dancing_00'}


@pytest.mark.slow
def test_one_test_run_evaluates_every_listed_set(trained_snapshot, tiny_schedule_yaml, tmp_path, monkeypatch):
    """test.py with two sets: a result file per set, a summary table and metrics.csv rows
    that repeat the result files' numbers; compare_runs reads them back."""
    import yaml
    from main.test import main
    from tests.helpers import run_in_process
    from tool import compare_runs
    exp = tmp_path / 'exp_sets'
    shutil.copytree(trained_snapshot, exp)
    options = yaml.safe_load(Path(tiny_schedule_yaml).read_text())
    options['testset'] = ['PW3D', 'PW3D-crowd']
    schedule = tmp_path / 'sets.yaml'
    schedule.write_text(yaml.safe_dump(options))
    import csv

    def metric_rows():
        path = exp / 'log' / 'metrics.csv'
        if not path.is_file():
            return []
        with open(path, newline='') as f:
            return list(csv.DictReader(f))

    # The shared snapshot may already hold evaluations by other tests: this run's rows follow them.
    earlier = metric_rows()
    import common.tester
    drawn = []
    real_figure = common.tester.write_training_figure
    monkeypatch.setattr(common.tester, 'write_training_figure', lambda log_dir: drawn.append(real_figure(log_dir)))
    run_in_process(main, ['--gpu', '0', '--exp_dir', str(exp), '--test_epoch', '0', '--cfg', str(schedule)])
    result = exp / 'result'
    summaries = {name: json.loads((result / f'eval_{name}_snapshot_0.json').read_text())
                 for name in ('PW3D', 'PW3D-crowd')}
    assert (result / 'predictions_PW3D-crowd_snapshot_0.npz').is_file()
    table = (result / 'eval_summary_snapshot_0.txt').read_text().splitlines()
    assert table[1].split()[:4] == ['evaluation', 'set', 'mpjpe', '(mm)']
    for line, name in zip(table[3:], ('PW3D', 'PW3D-crowd')):
        assert line.split() == [name] + [f"{summaries[name][m]:.2f}" for m in ('mpjpe', 'pa_mpjpe', 'mpvpe')] \
            + [str(summaries[name]['num_samples'])]
    all_rows = metric_rows()
    assert all_rows[:len(earlier)] == earlier
    rows = all_rows[len(earlier):]
    assert [(r['epoch'], r['testset'], r['metric']) for r in rows] == [
        ('0', name, metric) for name in ('PW3D', 'PW3D-crowd') for metric in ('mpjpe', 'pa_mpjpe', 'mpvpe')]
    for r in rows:
        assert float(r['value_mm']) == pytest.approx(summaries[r['testset']][r['metric']])
        assert r['checkpoint'] == str(exp / 'checkpoint' / 'snapshot_0.pth.tar')
    assert (exp / 'log' / 'training.png').is_file() and len(drawn) == 1  # redrawn once, after both sets
    text = compare_runs.main([str(exp)])
    assert f"{summaries['PW3D-crowd']['mpjpe']:.2f}" in text.split('== PW3D-crowd ==')[1]
    assert os.path.basename(exp) in text
