"""tool/check_setup.py on the synthetic tree: a complete tree passes, every broken file of a
broken tree is listed in one run, an optional file only warns, and the files it checks are the
files the loaders open."""
import builtins
import json
import shutil

import pytest

from common.errors import DataError
import torch

from tool import check_setup

MISSING, MALFORMED, IMAGES = 'MISSING ', 'MALFORMED ', 'IMAGES '


@pytest.fixture
def tree(tmp_path, data_cfg, synthetic_smpl_dir, synthetic_data_root, monkeypatch):
    """Private copies of the synthetic data tree and body model, plus a warm-start file under a
    temporary repository root; cfg points at all three (restored afterwards)."""
    data = shutil.copytree(synthetic_data_root, tmp_path / 'data')
    smpl = shutil.copytree(synthetic_smpl_dir, tmp_path / 'smpl')
    root = tmp_path / 'repo'
    (root / 'tool').mkdir(parents=True)
    torch.save({'epoch': 0, 'network': {'module.backbone.conv1.weight': torch.zeros(2, 3, 1, 1)}},
               root / 'tool' / 'snapshot_0.pth.tar')
    monkeypatch.setattr(data_cfg, 'root_dir', str(root))
    data_cfg.data_dir, data_cfg.smpl_model_dir = str(data), str(smpl)
    return {'data': data, 'smpl': smpl, 'root': root}


def run(capsys, *args):
    """(exit status, printed report lines) of one check."""
    status = check_setup.main(list(args))
    return status, capsys.readouterr().out.splitlines()


def reported(lines, label, path):
    """True when a report line starts with ``label`` (padded) and names exactly ``path``."""
    return any(line.startswith(label.strip()) and line.split()[-1] == str(path) for line in lines)


def test_complete_tree_passes_and_lists_nothing(tree, capsys):
    status, lines = run(capsys, '--continue', '--images', '5')
    assert status == 0
    assert not any(line.startswith(('MISSING', 'MALFORMED', 'IMAGES')) for line in lines), lines
    assert 'Ready: every required file is present and well-formed.' in lines


def test_every_broken_file_is_listed_in_one_run(tree, capsys):
    data, smpl = tree['data'], tree['smpl']
    pw3d_annotations = data / 'PW3D' / 'data' / '3DPW_latest_test.json'
    pw3d_annotations.unlink()                                         # missing annotation file
    muco_fits = data / 'MuCo' / 'data' / 'smpl_param.json'
    muco_fits.write_text(muco_fits.read_text()[:40])                   # truncated JSON
    coco_annotations = data / 'MSCOCO' / 'annotations' / 'person_keypoints_train2017.json'
    coco_annotations.write_text('[]')                                  # wrong top-level layout
    extra_regressor = data / 'J_regressor_extra.npy'
    extra_regressor.unlink()                                           # missing regressor
    neutral = smpl / 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl'
    neutral.write_bytes(b'not a pickle')                               # unreadable body model
    mpii_annotations = data / 'MPII' / 'data' / 'annotations' / 'train.json'
    first_image = json.loads(mpii_annotations.read_text())['images'][0]['file_name']
    (data / 'MPII' / 'data' / first_image).unlink()                    # an image the loader reads
    h36m_images = data / 'Human36M' / 'images'
    shutil.rmtree(h36m_images)                                         # a whole image folder

    status, lines = run(capsys)

    assert status == 1
    assert reported(lines, MISSING, pw3d_annotations)
    assert reported(lines, MALFORMED, muco_fits)
    assert reported(lines, MALFORMED, coco_annotations)
    assert reported(lines, MISSING, extra_regressor)
    assert reported(lines, MALFORMED, neutral)
    assert reported(lines, IMAGES, mpii_annotations)
    assert reported(lines, MISSING, h36m_images)
    assert any(first_image in line for line in lines)
    assert lines[-1].startswith('ERROR: the selected sets cannot run')
    # Each finding says what the file is and where it comes from.
    at = next(i for i, line in enumerate(lines) if line.endswith(str(pw3d_annotations)))
    assert lines[at + 1].strip().startswith('what: 3DPW test annotations')
    assert 'drive.google.com' in lines[at + 2] and lines[at + 2].strip().startswith('from:')


def test_selection_limits_the_check(tree, capsys):
    (tree['data'] / 'MuCo' / 'data' / 'MuCo-3DHP.json').unlink()
    assert run(capsys, '--test')[0] == 0             # testing on 3DPW does not read MuCo
    status, lines = run(capsys, '--train')
    assert status == 1
    assert reported(lines, MISSING, tree['data'] / 'MuCo' / 'data' / 'MuCo-3DHP.json')


def test_missing_warm_start_only_warns_without_continue(tree, capsys):
    warm_start = tree['root'] / 'tool' / 'snapshot_0.pth.tar'
    warm_start.unlink()
    status, lines = run(capsys)
    assert status == 0
    assert reported(lines, 'MISSING (optional)', warm_start)
    assert lines[-1] == 'Ready: every required file is present and well-formed.'
    status, lines = run(capsys, '--continue')
    assert status == 1
    assert reported(lines, MISSING, warm_start)
    with pytest.raises(SystemExit) as exit_info:     # the command line's exit status
        check_setup.run_cli(['--continue'])
    assert exit_info.value.code == 1


def test_model_checkpoint_without_network_is_malformed(tree, capsys, tmp_path):
    model = tmp_path / 'snapshot_10.pth.tar'
    torch.save({'epoch': 10}, model)
    status, lines = run(capsys, '--test', '--model', str(model))
    assert status == 1
    assert reported(lines, MALFORMED, model)
    assert any("no 'network' entry" in line for line in lines)


def test_bad_cfg_file_is_one_error_line(tree, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('testset: Nowhere\n')
    with pytest.raises(SystemExit) as exit_info:
        check_setup.run_cli(['--cfg', str(bad)])
    assert str(exit_info.value.code).startswith('ERROR: --cfg')


@pytest.mark.filterwarnings('ignore:PW3D')
@pytest.mark.parametrize('name, split, crowd', [('PW3D', 'test', False), ('PW3D', 'test', True),
                                                 ('MSCOCO', 'train', False), ('MSCOCO', 'val', False),
                                                 ('MPII', 'train', False), ('MuCo', 'train', False),
                                                 ('Human36M', 'train', False), ('Human36M', 'test', False),
                                                 ('PW3D-OC', 'test', False), ('PW3D-PC', 'test', False)])
def test_checked_json_files_are_the_files_the_loader_opens(tree, monkeypatch, name, split, crowd):
    """The declaration check_setup inspects and the loader's reads are one list: every JSON file
    the constructor opens is declared, and every declared JSON file is opened."""
    from data.registry import dataset_class, dataset_files
    tree_cfg = check_setup.cfg
    tree_cfg.crowd = crowd
    options = tree_cfg.data_options()
    declared = {entry.path for entry in dataset_files(name, options, split).values() if entry.path.endswith('.json')}
    opened, real_open = set(), builtins.open

    def recording_open(file, *args, **kwargs):
        if str(file).endswith('.json'):
            opened.add(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', recording_open)
    try:
        dataset_class(name)(None, split, options)
    except DataError:   # a subset the synthetic tree has nobody in, found after reading every file
        pass
    assert opened == declared


def test_a_file_two_readers_need_is_listed_once_and_required_if_either_needs_it():
    from common.utils.required_files import RequiredFile, Requirements
    needs = Requirements()
    needs.add(RequiredFile('/x/a.json', 'a', 'here', required=False), 'train --continue')
    needs.add(RequiredFile('/x/a.json', 'a', 'here'), 'PW3D (test)')
    needs.add(RequiredFile('/x/a.json', 'a', 'here', required=False), 'PW3D (test)')
    assert list(needs.files) == ['/x/a.json'] and needs.files['/x/a.json'].required
    assert needs.readers['/x/a.json'] == ['train --continue', 'PW3D (test)']


def test_image_sample_is_spread_from_first_to_last():
    from common.utils.required_files import spread
    assert spread(list(range(10)), 3) == [0, 4, 9]
    assert spread(list(range(10)), 1) == [0]
    assert spread([7, 8], 5) == [7, 8]
