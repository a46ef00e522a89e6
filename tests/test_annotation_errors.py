"""Missing, malformed and non-finite annotation content (docs/METHOD.md, "Data on disk").

Each test copies the synthetic tree, breaks one thing in one file and asserts that the
loader refuses it with ``AnnotationError`` (a ValueError) whose message names the file and
the record, or, for SMPL fits missing for some samples, counts them in one warning line.
"""
import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from data.annotations import AnnotationError
from data.registry import dataset_class

pytestmark = pytest.mark.usefixtures('cfg_state')

H36M_ANN = Path('Human36M', 'annotations')
MUCO = Path('MuCo', 'data')
COCO_ANN = Path('MSCOCO', 'annotations')
MPII_ANN = Path('MPII', 'data', 'annotations')
PW3D = Path('PW3D', 'data')


@pytest.fixture
def tree(tmp_path, data_cfg, synthetic_data_root):
    """A private copy of the synthetic data tree, used as ``data_dir``."""
    root = tmp_path / 'data'
    shutil.copytree(synthetic_data_root, root)
    data_cfg.data_dir = str(root)
    return root


def load(path):
    return json.loads(Path(path).read_text())


def save(path, content):
    Path(path).write_text(json.dumps(content))   # NaN / Infinity are written as JSON extensions


def build(name, split='train'):
    return dataset_class(name)(None, split)


def refused(name, split, *fragments):
    """Build the dataset, expect AnnotationError, check every fragment appears in the message."""
    with pytest.raises(AnnotationError) as err:
        build(name, split)
    message = str(err.value)
    for fragment in fragments:
        assert str(fragment) in message, message
    assert '\n' not in message
    return message


def first_used_h36m_frame(root, subject=1):
    """(image, annotation, frame keys) of the first subject-1 training frame (frame_idx % 5 == 0)."""
    data = load(root / H36M_ANN / f'Human36M_subject{subject}_data.json')
    img = next(i for i in data['images'] if i['frame_idx'] % 5 == 0)
    ann = next(a for a in data['annotations'] if a['image_id'] == img['id'])
    return data, img, ann, (str(img['action_idx']), str(img['subaction_idx']), str(img['frame_idx']))


# ----------------------------------------------------------------------------- Human3.6M
@pytest.mark.parametrize('collection, field', [('annotations', 'bbox'), ('images', 'cam_idx')])
def test_h36m_missing_field_names_data_file_and_record(tree, collection, field):
    data, img, ann, _ = first_used_h36m_frame(tree)
    record = ann if collection == 'annotations' else img
    del next(r for r in data[collection] if r['id'] == record['id'])[field]
    path = tree / H36M_ANN / 'Human36M_subject1_data.json'
    save(path, data)
    kind = 'annotation' if collection == 'annotations' else 'image'
    refused('Human36M', 'train', path, f"{kind} id {record['id']}", field)


@pytest.mark.parametrize('value', [None, float('nan')])
def test_h36m_missing_or_nan_frame_index_names_data_file_and_record(tree, value):
    data, img, _, _ = first_used_h36m_frame(tree, subject=5)
    record = next(r for r in data['images'] if r['id'] == img['id'])
    if value is None:
        del record['frame_idx']
    else:
        record['frame_idx'] = value
    path = tree / H36M_ANN / 'Human36M_subject5_data.json'
    save(path, data)
    refused('Human36M', 'train', path, f"image id {img['id']}", 'frame_idx')


def test_h36m_skipped_frames_are_not_validated(tree):
    """A frame the split does not read (frame_idx % 5 != 0) may lack fields: the datalist is unchanged."""
    before = [data['img_id'] for data in build('Human36M').datalist]
    path = tree / H36M_ANN / 'Human36M_subject1_data.json'
    data = load(path)
    skipped = [img for img in data['images'] if img['frame_idx'] % 5 != 0]
    assert skipped
    skipped_ids = {img['id'] for img in skipped}
    for img in skipped:
        del img['height'], img['subject']
    for ann in data['annotations']:
        if ann['image_id'] in skipped_ids:
            del ann['bbox']
    save(path, data)
    assert [data['img_id'] for data in build('Human36M').datalist] == before


def test_h36m_nan_joint_names_joint_file_and_frame(tree):
    _, _, _, keys = first_used_h36m_frame(tree)
    path = tree / H36M_ANN / 'Human36M_subject1_joint_3d.json'
    joints = load(path)
    joints[keys[0]][keys[1]][keys[2]][3][1] = float('nan')
    save(path, joints)
    message = refused('Human36M', 'train', path, str(list(keys)), 'non-finite')
    assert '(3, 1)' in message


def test_h36m_non_finite_camera_names_camera_file_and_camera(tree):
    _, img, _, _ = first_used_h36m_frame(tree)
    path = tree / H36M_ANN / 'Human36M_subject1_camera.json'
    cameras = load(path)
    cameras[str(img['cam_idx'])]['t'][2] = float('inf')
    save(path, cameras)
    refused('Human36M', 'train', path, f"camera {img['cam_idx']!r}", "'t'", 'non-finite')


def test_h36m_nan_fit_names_fit_file_and_frame(tree):
    _, _, _, keys = first_used_h36m_frame(tree)
    path = tree / H36M_ANN / 'Human36M_subject1_smpl_param.json'
    fits = load(path)
    entry = fits.get(keys[0], {}).get(keys[1], {}).get(keys[2])
    if entry is None:   # the synthetic tree leaves some frames without a fit: use one that has one
        keys = next((a, s, f) for a in fits for s in fits[a] for f in fits[a][s] if int(f) % 5 == 0)
        entry = fits[keys[0]][keys[1]][keys[2]]
    entry['trans'][0] = float('nan')
    save(path, fits)
    refused('Human36M', 'train', path, str(list(keys)), 'non-finite')


@pytest.mark.parametrize('split, subjects', [('train', (1, 5, 6, 7, 8)), ('test', (9, 11))])
def test_h36m_empty_fit_files_are_an_error_naming_them(tree, split, subjects):
    for subject in subjects:
        save(tree / H36M_ANN / f'Human36M_subject{subject}_smpl_param.json', {})
    refused('Human36M', split, 'smpl_param.json', 'none of the', 'SMPL fit')


def test_h36m_samples_without_fit_are_counted_in_one_warning(tree, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = build('Human36M')
    missing = sum(data['smpl_param'] is None for data in dataset.datalist)
    assert 0 < missing < len(dataset)
    lines = [r.getMessage() for r in caplog.records if 'no SMPL fit' in r.getMessage()]
    assert lines == [lines[0]] and f'{missing} of {len(dataset)} samples' in lines[0]


# ------------------------------------------------------------------------------- MuCo
def test_muco_nan_keypoints_name_file_and_annotation(tree):
    path = tree / MUCO / 'MuCo-3DHP.json'
    content = load(path)
    ann = content['annotations'][-1]
    ann['keypoints_cam'][0][2] = float('nan')
    save(path, content)
    refused('MuCo', 'train', path, f"annotation id {ann['id']}", 'keypoints_cam', 'non-finite')


def test_muco_non_finite_camera_names_file_and_image(tree):
    path = tree / MUCO / 'MuCo-3DHP.json'
    content = load(path)
    img = content['images'][0]
    img['f'][1] = float('-inf')
    save(path, content)
    refused('MuCo', 'train', path, f"image id {img['id']}", "'f'")


@pytest.mark.parametrize('fits', ['empty', 'rekeyed'])
def test_muco_fit_file_matching_no_annotation_is_an_error(tree, fits):
    path = tree / MUCO / 'smpl_param.json'
    content = load(path)
    save(path, {} if fits == 'empty' else {f'ann_{key}': value for key, value in content.items()})
    refused('MuCo', 'train', path, 'none of the', 'MuCo samples')


def test_muco_partial_fits_are_counted(tree, caplog):
    path = tree / MUCO / 'smpl_param.json'
    reference = build('MuCo')
    content = load(path)
    keep = str(reference.datalist[0]['ann_id'])
    save(path, {keep: content[keep]})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dataset = build('MuCo')
    assert len(dataset) == len(reference)
    assert sum(data['smpl_param'] is not None for data in dataset.datalist) == 1
    lines = [r.getMessage() for r in caplog.records if 'no SMPL fit' in r.getMessage()]
    assert len(lines) == 1 and f'{len(dataset) - 1} of {len(dataset)} samples' in lines[0] and str(path) in lines[0]


# ----------------------------------------------------------------------- MSCOCO and MPII
def kept_coco_annotation(content):
    return next(a for a in content['annotations'] if not a['iscrowd'] and a['num_keypoints'] > 0)


@pytest.mark.parametrize('field, index', [('bbox', 2),         # refused, not dropped as a degenerate box
                                          ('keypoints', 4)])
def test_coco_nan_names_file_annotation_and_field(tree, field, index):
    path = tree / COCO_ANN / 'person_keypoints_train2017.json'
    content = load(path)
    ann = kept_coco_annotation(content)
    ann[field][index] = float('nan')
    save(path, content)
    refused('MSCOCO', 'train', path, f"annotation id {ann['id']}", field, 'non-finite')


def test_neuralannot_nan_camera_names_fit_file_annotation_and_field(tree):
    path = tree / COCO_ANN / 'MSCOCO_train_SMPL_NeuralAnnot.json'
    content = load(path)
    key = next(iter(content))
    content[key]['cam_param']['focal'][0] = float('nan')
    save(path, content)
    refused('MSCOCO', 'train', path, f'annotation id {key}', "'cam_param.focal'", 'non-finite')


def test_neuralannot_short_pose_names_fit_file_annotation_and_field(tree):
    path = tree / COCO_ANN / 'MSCOCO_train_SMPL_NeuralAnnot.json'
    content = load(path)
    key = next(iter(content))
    content[key]['smpl_param']['pose'] = content[key]['smpl_param']['pose'][:69]
    save(path, content)
    refused('MSCOCO', 'train', path, f'annotation id {key}', "'smpl_param.pose'", '72 numbers')


@pytest.mark.parametrize('name, fit_file', [('MSCOCO', COCO_ANN / 'MSCOCO_train_SMPL_NeuralAnnot.json'),
                                            ('MPII', MPII_ANN / 'MPII_train_SMPL_NeuralAnnot.json')])
@pytest.mark.parametrize('fits', ['empty', 'rekeyed'])
def test_neuralannot_file_matching_no_annotation_is_an_error(tree, name, fit_file, fits):
    path = tree / fit_file
    content = load(path)
    save(path, {} if fits == 'empty' else {str(int(key) + 10 ** 6): value for key, value in content.items()})
    refused(name, 'train', path, 'none of the', 'SMPL fit')


def test_neuralannot_partial_fits_are_counted(tree, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = build('MPII')
    missing = sum(data['smpl_param'] is None for data in dataset.datalist)
    lines = [r.getMessage() for r in caplog.records if 'no SMPL fit' in r.getMessage()]
    assert missing > 0 and len(lines) == 1
    assert re.search(rf'MPII: {missing} of {len(dataset)} samples .*MPII_train_SMPL_NeuralAnnot.json', lines[0])


# ------------------------------------------------------------------------------- 3DPW
def pw3d_file(tree):
    path = tree / PW3D / '3DPW_latest_test.json'
    return path, load(path)


@pytest.mark.parametrize('collection, index, field', [
    ('annotations', 1, 'smpl_param'), ('annotations', 1, 'bbox'), ('annotations', 1, 'openpose_result'),
    ('images', 0, 'cam_param'), ('images', 0, 'sequence'), ('images', 0, 'width')])
def test_pw3d_missing_field_names_file_and_record(tree, collection, index, field):
    path, content = pw3d_file(tree)
    record = content[collection][index]
    del record[field]
    save(path, content)
    kind = 'annotation' if collection == 'annotations' else 'image'
    refused('PW3D', 'test', path, f"{kind} id {record['id']}", field)


def test_pw3d_camera_without_focal_names_file_and_image(tree):
    path, content = pw3d_file(tree)
    img = content['images'][0]
    del img['cam_param']['focal']
    save(path, content)
    refused('PW3D', 'test', path, f"image id {img['id']}", 'focal')


def set_nan(*keys):
    """An edit writing NaN at ``annotation[keys[0]][keys[1]]...``."""
    def edit(ann):
        node = ann
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = float('nan')
    return edit


@pytest.mark.parametrize('field, edit', [('smpl_param.trans', set_nan('smpl_param', 'trans', 2)),
                                         ('smpl_param.pose', set_nan('smpl_param', 'pose', 7)),
                                         ('openpose_result', set_nan('openpose_result', 3, 0)),
                                         ('bbox', set_nan('bbox', 0))])
def test_pw3d_non_finite_values_name_file_annotation_and_field(tree, field, edit):
    path, content = pw3d_file(tree)
    ann = content['annotations'][2]
    edit(ann)
    save(path, content)
    refused('PW3D', 'test', path, f"annotation id {ann['id']}", field, 'non-finite')


def test_annotation_error_is_a_value_error():
    """Callers catching ValueError (as before) still catch every annotation error."""
    assert issubclass(AnnotationError, ValueError)


def test_pw3d_crowd_nan_detection_names_crowd_file_and_annotation(tree, data_cfg):
    data_cfg.crowd = True
    path = tree / PW3D / '3DPW_validation_crowd_hhrnet_result.json'
    content = load(path)
    if not content:
        pytest.skip('the synthetic crowd file has no detections')
    key = next(iter(content))
    content[key]['coco_joints'][5][1] = float('nan')
    save(path, content)
    refused('PW3D', 'test', path, f'annotation id {key}', 'coco_joints', 'non-finite')
    save(path, [])
    refused('PW3D', 'test', path, 'keyed by str(annotation id)')
