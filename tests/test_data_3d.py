"""Human36M and MuCo loaders on the synthetic tree (docs/METHOD.md, "Data on disk",
"Training samples", "Evaluation").

Expected values are re-derived here from the JSON files, the documented formulas and the SMPL
layer; nothing is compared with the loaders' own helpers.
"""
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from main.config import cfg

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

H36M_SUBJECTS = {'train': (1, 5, 6, 7, 8), 'test': (9, 11)}
H36M_KINDS = ('data', 'camera', 'joint_3d', 'smpl_param')
# Joint conventions: H36M-17 / MuCo-21 index -> SMPL-30 index (None = dropped).
H36M_TO_SMPL30 = (0, 2, 5, 8, 1, 4, 7, 3, 12, 24, 29, 16, 18, 20, 17, 19, 21)
MUCO_TO_SMPL30 = (29, None, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 0, 6, 15, 23, 22, 11, 10)
H36M_FLIP = ((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13))
MUCO_FLIP = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (17, 18), (19, 20))
H36M_EVAL = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
H36M_MUCO_COMMON = (0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16)
MUCO_FOR_H36M_COMMON = (14, 8, 9, 10, 11, 12, 13, 0, 5, 6, 7, 2, 3, 4)   # same order as H36M_MUCO_COMMON
SMPL30_POSE_FLIP = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))

TRAIN_KEYS = {
    'inputs': {'img': (3, 256, 256), 'joints': (30, 2), 'joints_mask': (30, 1)},
    'targets': {'orig_joint_img': (30, 3), 'fit_joint_img': (30, 3), 'orig_joint_cam': (30, 3),
                'fit_joint_cam': (30, 3), 'pose_param': (72,), 'shape_param': (10,)},
    'meta_info': {'orig_joint_valid': (30, 1), 'orig_joint_trunc': (30, 1), 'fit_param_valid': (72,),
                  'fit_joint_trunc': (30, 1), 'is_valid_fit': (), 'is_3D': ()},
}


# ----------------------------------------------------------------------------- helpers
def load_json(path):
    with open(path) as f:
        return json.load(f)


def as_numpy(value):
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def to_tensor(patch):
    """Stand-in for torchvision's ToTensor on the float32 HWC patch (no rescaling of float input)."""
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))


def h36m_ann(root, subject, kind):
    return load_json(Path(root) / 'Human36M' / 'annotations' / f'Human36M_subject{subject}_{kind}.json')


def expected_h36m_frames(root, split):
    """Straight re-derivation of the kept (image id) list from the JSON files."""
    kept = []
    for subject in H36M_SUBJECTS[split]:
        data = h36m_ann(root, subject, 'data')
        fits = h36m_ann(root, subject, 'smpl_param')
        images = {img['id']: img for img in data.get('images', [])}
        for ann in data.get('annotations', []):
            img = images[ann['image_id']]
            keys = (str(img['action_idx']), str(img['subaction_idx']), str(img['frame_idx']))
            has_fit = keys[2] in fits.get(keys[0], {}).get(keys[1], {})
            if split == 'train' and img['frame_idx'] % 5 == 0:
                kept.append(img['id'])
            if split == 'test' and img['frame_idx'] % 64 == 0 and img['cam_idx'] == 4 and has_fit:
                kept.append(img['id'])
    return kept


def h36m_frame_info(root, img_id):
    """(image, camera, world joints (17,3) mm, fit or None) of one H36M image id."""
    for subject in H36M_SUBJECTS['train'] + H36M_SUBJECTS['test']:
        data = h36m_ann(root, subject, 'data')
        for img in data.get('images', []):
            if img['id'] == img_id:
                keys = (str(img['action_idx']), str(img['subaction_idx']), str(img['frame_idx']))
                joints = h36m_ann(root, subject, 'joint_3d')[keys[0]][keys[1]][keys[2]]
                fit = h36m_ann(root, subject, 'smpl_param').get(keys[0], {}).get(keys[1], {}).get(keys[2])
                camera = h36m_ann(root, subject, 'camera')[str(img['cam_idx'])]
                return img, camera, np.array(joints, dtype=np.float64), fit
    raise KeyError(img_id)


def smpl_mesh(smpl, pose, shape, trans):
    """Neutral SMPL mesh (6890,3) in metres, float64."""
    with torch.no_grad():
        verts, _ = smpl.layer['neutral'](torch.tensor(np.reshape(pose, (1, 72)), dtype=torch.float64),
                                         torch.tensor(np.reshape(shape, (1, 10)), dtype=torch.float64),
                                         torch.tensor(np.reshape(trans, (1, 3)), dtype=torch.float64))
    return verts[0].numpy()


def crop_map(bbox, img_width, do_flip):
    """Straight-line crop transform (scale 1, rot 0): pixel (N,2) -> crop (N,2)."""
    x, y, w, h = (float(v) for v in bbox)
    cx, cy = x + w / 2, y + h / 2
    if do_flip:
        cx = img_width - 1 - cx

    def apply(uv):
        uv = np.array(uv, dtype=np.float64)
        if do_flip:
            uv[:, 0] = img_width - 1 - uv[:, 0]
        return np.stack([(uv[:, 0] - cx) * 256 / w + 128, (uv[:, 1] - cy) * 256 / h + 128], axis=1)
    return apply


def swap_rows(array, pairs):
    out = np.array(array, copy=True)
    for a, b in pairs:
        out[[a, b]] = out[[b, a]]
    return out


def find_flips(dataset, idx, max_epochs=24):
    """{do_flip: sample} for both flip states of one entry, found by varying the epoch (cfg.seed set).

    The flip state of a sample is recognised by its GT joints matching the straight-line
    crop map of the unflipped or of the mirrored image.
    """
    data = dataset.datalist[idx]
    rows, smpl_rows = mapped_rows(dataset_map(dataset))
    pairs = H36M_FLIP if type(dataset).__name__ == 'Human36M' else MUCO_FLIP
    found = {}
    for epoch in range(max_epochs):
        dataset.set_epoch(epoch)
        sample = dataset[idx]
        got = as_numpy(sample[1]['orig_joint_img'])[smpl_rows, :2]
        for do_flip in (False, True):
            source = swap_rows(data['joint_img'], pairs) if do_flip else data['joint_img']
            expected = crop_map(data['bbox'], data['img_shape'][1], do_flip)(source[rows, :2]) / 4
            if np.allclose(got, expected, atol=2e-3):
                found.setdefault(do_flip, sample)
        if len(found) == 2:
            break
    dataset.set_epoch(0)
    assert len(found) == 2, 'each sample must match one flip state, and both states occur within a few epochs'
    return found


def dataset_map(dataset):
    return H36M_TO_SMPL30 if type(dataset).__name__ == 'Human36M' else MUCO_TO_SMPL30


def mapped_rows(table):
    return [k for k, m in enumerate(table) if m is not None], [m for m in table if m is not None]


def check_train_sample(sample):
    """Keys, shapes, dtypes and value ranges of a training sample."""
    for part, (dict_name, keys) in zip(sample, TRAIN_KEYS.items()):
        assert set(part) == set(keys), dict_name
        for key, shape in keys.items():
            value = as_numpy(part[key])
            assert value.shape == shape, (key, value.shape)
            assert value.dtype == np.float32, (key, value.dtype)
            assert np.all(np.isfinite(value)), key
    inputs, targets, meta = sample
    img = as_numpy(inputs['img'])
    assert 0 <= img.min() and img.max() <= 1 and img.max() > 0.2
    masks = {'joints_mask': inputs['joints_mask'], **{k: meta[k] for k in (
        'orig_joint_valid', 'orig_joint_trunc', 'fit_joint_trunc', 'fit_param_valid')}}
    for key, value in masks.items():
        assert set(np.unique(as_numpy(value))) <= {0.0, 1.0}, key
    assert float(meta['is_3D']) == 1.0
    assert float(meta['is_valid_fit']) in (0.0, 1.0)
    np.testing.assert_array_equal(as_numpy(inputs['joints_mask']), as_numpy(meta['orig_joint_trunc']))
    assert np.all(as_numpy(meta['orig_joint_trunc']) <= as_numpy(meta['orig_joint_valid']))


def processed_test_box(uv, width, height):
    """Straight-line box processing: get_bbox (1.2x) then the non-rejecting sanitiser, square, 1.25x."""
    lo, hi = uv.min(0), uv.max(0)
    center, size = (lo + hi) / 2, (hi - lo) * 1.2
    x, y = center - size / 2
    w, h = size
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0, y1 + max(0.0, h - 1))
    w, h = x2 - x1, y2 - y1
    side = max(w, h) * 1.25
    return np.array([x1 + w / 2 - side / 2, y1 + h / 2 - side / 2, side, side])


def splat_mask(points, shape, radius=2):
    """Silhouette of projected mesh vertices (N,2) on an (H,W) grid, closed morphologically."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(points).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < shape[0])
    for x, y in pts[inside]:
        cv2.circle(mask, (int(x), int(y)), radius, 1, -1)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)).astype(bool)


def assert_joints_on_mannequin(crop_img, joints_crop, verts_crop):
    """GT joints fall on the mesh silhouette, and the crop shows the one-coloured mannequin there.

    The silhouette comes from the straight-line projection of the annotated mesh; the
    mannequin is recognised by its chromaticity (constant under shading), the background
    by its varying colours.
    """
    mask = splat_mask(verts_crop, crop_img.shape[1:])
    inner = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    rgb = crop_img.transpose(1, 2, 0).astype(np.float64) * 255
    total = rgb.sum(axis=2)
    # outside the person, but not the black border of a crop reaching past the image
    outer = ~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & (total > 3)
    assert inner.sum() > 300 and outer.sum() > 300
    chroma = rgb / (total[..., None] + 1e-6)
    reference = np.median(chroma[inner], axis=0)
    matches = np.abs(chroma - reference).max(axis=2) < 0.04
    assert matches[inner].mean() > 0.8, matches[inner].mean()
    assert matches[outer].mean() < 0.3, matches[outer].mean()
    pts = np.round(joints_crop).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < 256) & (pts[:, 1] >= 0) & (pts[:, 1] < 256)
    assert inside.sum() >= 10
    dilated = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert dilated[pts[inside, 1], pts[inside, 0]].all()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def tree_root(synthetic_data_root):
    return Path(synthetic_data_root)


@pytest.fixture
def h36m_train(data_cfg):
    from data.Human36M.Human36M import Human36M
    cfg.seed = 11
    return Human36M(to_tensor, 'train')


@pytest.fixture
def h36m_test(data_cfg):
    from data.Human36M.Human36M import Human36M
    return Human36M(to_tensor, 'test')


@pytest.fixture
def muco(data_cfg):
    from data.MuCo.MuCo import MuCo
    cfg.seed = 11
    return MuCo(to_tensor, 'train')


def copy_tree(src_root, dst_root, datasets=('Human36M',)):
    """A private copy of parts of the synthetic tree (with the root regressor) for destructive tests."""
    dst_root = Path(dst_root)
    dst_root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(src_root) / 'J_regressor_extra.npy', dst_root / 'J_regressor_extra.npy')
    for name in datasets:
        shutil.copytree(Path(src_root) / name, dst_root / name)
    if 'Human36M' not in datasets:
        (dst_root / 'Human36M').mkdir()
        shutil.copyfile(Path(src_root) / 'Human36M' / 'J_regressor_h36m_correct.npy',
                        dst_root / 'Human36M' / 'J_regressor_h36m_correct.npy')
    return dst_root


# ------------------------------------------------------------------- constraints of the written tree
def test_h36m_tree_meets_format_constraints(tree_root):
    ann_dir = tree_root / 'Human36M' / 'annotations'
    keys_seen, image_ids = set(), []
    for split, subjects in H36M_SUBJECTS.items():
        for subject in subjects:
            for kind in H36M_KINDS:
                assert (ann_dir / f'Human36M_subject{subject}_{kind}.json').is_file(), (subject, kind)
            data = h36m_ann(tree_root, subject, 'data')
            if data:
                keys_seen.add(tuple(sorted(data)))
                assert all(isinstance(v, list) for v in data.values())
            cameras = h36m_ann(tree_root, subject, 'camera')
            joints = h36m_ann(tree_root, subject, 'joint_3d')
            fits = h36m_ann(tree_root, subject, 'smpl_param')
            for img in data.get('images', []):
                image_ids.append(img['id'])
                assert img['subject'] == subject and 1 <= img['cam_idx'] <= 4
                camera = cameras[str(img['cam_idx'])]
                assert 1000 < np.linalg.norm(camera['t']) < 20000            # mm
                rot = np.array(camera['R'])
                np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
                world = np.array(joints[str(img['action_idx'])][str(img['subaction_idx'])][str(img['frame_idx'])])
                assert world.shape == (17, 3)
                # millimetres: pelvis-to-head-top distance of a person
                assert 300 < np.linalg.norm(world[10] - world[0]) < 1500
            for action in fits.values():
                for sub in action.values():
                    for fit in sub.values():
                        assert len(fit['pose']) == 72 and len(fit['shape']) == 10
                        assert np.linalg.norm(fit['trans']) < 10              # metres
    assert len(keys_seen) == 1, 'all non-empty subject data files share their keys'
    assert len(image_ids) == len(set(image_ids))
    for split in ('train', 'test'):
        kept = expected_h36m_frames(tree_root, split)
        assert 3 <= len(kept) <= 16, (split, len(kept))
        for img_id in kept:
            img, _, _, _ = h36m_frame_info(tree_root, img_id)
            path = tree_root / 'Human36M' / 'images' / img['file_name']
            decoded = cv2.imread(str(path))
            assert decoded is not None and decoded.shape[:2] == (img['height'], img['width'])
            assert max(img['width'], img['height']) <= 500


def test_muco_tree_meets_format_constraints(tree_root):
    db = load_json(tree_root / 'MuCo' / 'data' / 'MuCo-3DHP.json')
    fits = load_json(tree_root / 'MuCo' / 'data' / 'smpl_param.json')
    ann_ids = {ann['id'] for ann in db['annotations']}
    per_image = {}
    for ann in db['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
        cam = np.array(ann['keypoints_cam'])
        assert cam.shape == (21, 3) and np.all(cam[:, 2] > 0)
        assert 300 < np.linalg.norm(cam[0] - cam[14]) < 1500                 # mm
    assert set(fits) <= {str(a) for a in ann_ids}
    folders = set()
    for img in db['images']:
        anns = per_image[img['id']]
        assert len(anns) >= 1
        for ann in anns:
            cam = np.array(ann['keypoints_cam'])
            uv = cam[:, :2] / cam[:, 2:] * np.array(img['f']) + np.array(img['c'])
            np.testing.assert_allclose(np.array(ann['keypoints_img']), uv, atol=1e-3)
        folders.add(img['file_name'].split('/')[0])
        decoded = cv2.imread(str(tree_root / 'MuCo' / 'data' / img['file_name']))
        assert decoded is not None and decoded.shape[:2] == (img['height'], img['width'])
    assert folders == {'augmented_set', 'unaugmented_set'}
    assert max(len(v) for v in per_image.values()) >= 3 and 3 <= len(db['images']) <= 10
    for fit in fits.values():
        assert np.linalg.norm(fit['trans']) < 20 and len(fit['pose']) == 72


# ----------------------------------------------------------------------------- Human36M train
def test_h36m_train_datalist_and_world_to_camera(h36m_train, tree_root):
    kept = expected_h36m_frames(tree_root, 'train')
    assert [d['img_id'] for d in h36m_train.datalist] == kept
    for data in h36m_train.datalist[:3]:
        img, camera, world, _ = h36m_frame_info(tree_root, data['img_id'])
        cam = world @ np.array(camera['R']).T + np.array(camera['t'])
        np.testing.assert_allclose(data['joint_cam'], cam, rtol=1e-5, atol=1e-2)
        uv = cam[:, :2] / cam[:, 2:] * np.array(camera['f']) + np.array(camera['c'])
        np.testing.assert_allclose(data['joint_img'][:, :2], uv, atol=1e-2)
        np.testing.assert_allclose(data['joint_img'][:, 2], cam[:, 2], rtol=1e-5)
        assert data['img_shape'] == (img['height'], img['width'])


def test_h36m_train_sample_contents(h36m_train, tree_root):
    rows, smpl_rows = mapped_rows(H36M_TO_SMPL30)
    for idx in range(len(h36m_train)):
        sample = h36m_train[idx]
        check_train_sample(sample)
        inputs, targets, meta = sample
        valid = np.zeros((30, 1), np.float32)
        valid[smpl_rows] = 1
        np.testing.assert_array_equal(as_numpy(meta['orig_joint_valid']), valid)
        joint_img = as_numpy(targets['orig_joint_img'])
        # depth normalisation: the root sits at z_hm = 32, others follow ((Z - Zr)/1000 + 1)/2*64
        assert joint_img[0, 2] == pytest.approx(32.0, abs=1e-4)
        data = h36m_train.datalist[idx]
        z_rel = data['joint_cam'][:, 2] - data['joint_cam'][0, 2]
        np.testing.assert_allclose(np.sort(joint_img[smpl_rows, 2]), np.sort((z_rel / 1000 + 1) / 2 * 64), atol=1e-3)
        # orig_joint_cam: root-relative metres, pelvis at the origin
        joint_cam = as_numpy(targets['orig_joint_cam'])
        np.testing.assert_allclose(joint_cam[0], 0, atol=1e-7)
        np.testing.assert_allclose(np.sort(np.linalg.norm(joint_cam[smpl_rows], axis=1)),
                                   np.sort(np.linalg.norm(data['joint_cam'] - data['joint_cam'][0], axis=1)) / 1000,
                                   atol=1e-5)
        # synthetic input: Pelvis, Torso, Neck, Head_top keep the clean GT x,y; unmapped joints are 0
        joints = as_numpy(inputs['joints'])
        np.testing.assert_allclose(joints[[0, 3, 12, 29]], joint_img[[0, 3, 12, 29], :2], atol=1e-4)
        unmapped = sorted(set(range(30)) - set(smpl_rows))
        np.testing.assert_array_equal(joints[unmapped], 0)
        assert float(as_numpy(targets['fit_joint_img'])[0, 2]) in (0.0, pytest.approx(32.0, abs=1e-4))


def test_h36m_fits_validity_and_fitting_error(h36m_train, tree_root):
    """Good synthetic fits reproduce the mocap (error ~ 0 -> is_valid_fit 1); missing or wrong ones give 0."""
    smpl = h36m_train.smpl
    regressor = np.load(tree_root / 'Human36M' / 'J_regressor_h36m_correct.npy')
    seen = set()
    for idx, data in enumerate(h36m_train.datalist):
        _, camera, world, fit = h36m_frame_info(tree_root, data['img_id'])
        expected = 0.0
        if fit is not None:
            mesh_world = smpl_mesh(smpl, fit['pose'], fit['shape'], fit['trans']) * 1000
            pred = regressor @ mesh_world
            pred = pred - pred.mean(0) + world.mean(0)
            error = np.linalg.norm(pred - world, axis=1).mean()
            assert error < 1.0 or error > 40.0, error     # the tree has only clear cases
            expected = float(error <= 25.0)
        meta = h36m_train[idx][2]
        assert float(meta['is_valid_fit']) == expected, (idx, fit is not None)
        seen.add((fit is not None, expected))
    assert seen == {(True, 1.0), (True, 0.0), (False, 0.0)}


def test_h36m_flip_consistency(h36m_train):
    idx = next(i for i, d in enumerate(h36m_train.datalist) if d['smpl_param'] is not None and
               float(h36m_train[i][2]['is_valid_fit']) == 1.0)
    samples = find_flips(h36m_train, idx)
    plain, flipped = samples[False], samples[True]
    rows, smpl_rows = mapped_rows(H36M_TO_SMPL30)
    # camera joints: x negated, left/right swapped (on the H36M rows, compared through the SMPL-30 map)
    cam_plain = as_numpy(plain[1]['orig_joint_cam'])[smpl_rows]
    cam_flip = as_numpy(flipped[1]['orig_joint_cam'])[smpl_rows]
    np.testing.assert_allclose(cam_flip, swap_rows(cam_plain * [-1, 1, 1], H36M_FLIP), atol=1e-6)
    # pose: pairs swapped, y/z of every axis-angle negated, i.e. R -> S R S with S = diag(-1, 1, 1)
    pose_plain = as_numpy(plain[1]['pose_param']).reshape(24, 3)
    pose_flip = as_numpy(flipped[1]['pose_param']).reshape(24, 3)
    mirror = np.diag([-1.0, 1.0, 1.0])
    expected = Rotation.from_rotvec(swap_rows(pose_plain, SMPL30_POSE_FLIP)).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(pose_flip).as_matrix(), mirror @ expected @ mirror, atol=1e-4)
    # the flipped fit's pelvis projects to the mirrored column of the unflipped one
    data = h36m_train.datalist[idx]
    width = data['img_shape'][1]
    x, _, w, _ = data['bbox']
    u_plain = as_numpy(plain[1]['fit_joint_img'])[0, 0] * 4 / 256 * w + x
    # (crop_map mirrors u -> W - 1 - u itself: in the flipped image the pelvis is at W - 1 - u_plain)
    expected_x = crop_map(data['bbox'], width, True)(np.array([[u_plain, 0.0]]))[0, 0] / 4
    assert as_numpy(flipped[1]['fit_joint_img'])[0, 0] == pytest.approx(expected_x, abs=0.1)
    assert float(flipped[2]['is_valid_fit']) == 1.0


def test_h36m_gt_joints_land_on_rendered_mannequin(h36m_train, tree_root):
    cfg.color_factor = 0.0
    smpl = h36m_train.smpl
    idx = next(i for i, d in enumerate(h36m_train.datalist) if d['smpl_param'] is not None)
    data = h36m_train.datalist[idx]
    _, camera, _, fit = h36m_frame_info(tree_root, data['img_id'])
    for do_flip, sample in find_flips(h36m_train, idx).items():
        mesh = smpl_mesh(smpl, fit['pose'], fit['shape'], fit['trans']) @ np.array(camera['R']).T \
            + np.array(camera['t']) / 1000
        uv = mesh[:, :2] / mesh[:, 2:] * np.array(camera['f']) + np.array(camera['c'])
        verts_crop = crop_map(data['bbox'], data['img_shape'][1], do_flip)(uv)
        joints_crop = as_numpy(sample[1]['orig_joint_img'])[mapped_rows(H36M_TO_SMPL30)[1], :2] * 4
        assert_joints_on_mannequin(as_numpy(sample[0]['img']), joints_crop, verts_crop)


def test_h36m_seed_determinism(h36m_train, data_cfg):
    from data.Human36M.Human36M import Human36M
    first = h36m_train[1]
    again = Human36M(to_tensor, 'train')[1]
    for part_a, part_b in zip(first, again):
        for key in part_a:
            np.testing.assert_array_equal(as_numpy(part_a[key]), as_numpy(part_b[key]))
    h36m_train.set_epoch(1)
    other = h36m_train[1]
    assert not np.array_equal(as_numpy(first[0]['img']), as_numpy(other[0]['img']))


# ----------------------------------------------------------------------------- Human36M test
def test_h36m_test_split_samples(h36m_test, tree_root):
    assert [d['img_id'] for d in h36m_test.datalist] == expected_h36m_frames(tree_root, 'test')
    smpl = h36m_test.smpl
    rows, smpl_rows = mapped_rows(H36M_TO_SMPL30)
    for idx, data in enumerate(h36m_test.datalist):
        inputs, targets, meta = h36m_test[idx]
        assert set(inputs) == {'img', 'joints', 'joints_mask'} and set(targets) == {'smpl_mesh_cam'}
        assert set(meta) == {'bb2img_trans'}
        assert as_numpy(inputs['img']).shape == (3, 256, 256)
        joints = as_numpy(inputs['joints'])
        assert joints.shape == (30, 3) and joints.dtype == np.float32
        assert as_numpy(inputs['joints_mask']).shape == (30, 1)
        img, camera, world, fit = h36m_frame_info(tree_root, data['img_id'])
        assert img['cam_idx'] == 4 and img['frame_idx'] % 64 == 0 and fit is not None
        cam = world @ np.array(camera['R']).T + np.array(camera['t'])
        uv = cam[:, :2] / cam[:, 2:] * np.array(camera['f']) + np.array(camera['c'])
        bbox = processed_test_box(uv, img['width'], img['height'])
        crop = crop_map(bbox, img['width'], False)(uv)
        np.testing.assert_allclose(joints[smpl_rows, :2], crop / 4, atol=0.05)
        np.testing.assert_allclose(joints[smpl_rows, 2], cam[:, 2], rtol=1e-4)
        bb2img = as_numpy(meta['bb2img_trans'])
        back = np.concatenate([crop, np.ones((17, 1))], axis=1) @ bb2img.T
        np.testing.assert_allclose(back, uv, atol=0.2)
        # target mesh: world fit moved into the camera frame (root via R, translation compensation)
        mesh = as_numpy(targets['smpl_mesh_cam'])
        assert mesh.shape == (6890, 3) and mesh.dtype == np.float32
        rot = np.array(camera['R'])
        pose = np.array(fit['pose'], dtype=np.float64)
        pose[:3] = Rotation.from_matrix(rot @ Rotation.from_rotvec(pose[:3]).as_matrix()).as_rotvec()
        body = smpl_mesh(smpl, pose, fit['shape'], np.zeros(3))
        pelvis = smpl.joint_regressor.astype(np.float64)[0] @ body
        offset = rot @ np.array(fit['trans']) + np.array(camera['t']) / 1000 - pelvis + rot @ pelvis
        np.testing.assert_allclose(mesh, (body + offset) * 1000, atol=0.5)
        # up to a constant shift it is the true camera-frame mesh
        true = (smpl_mesh(smpl, fit['pose'], fit['shape'], fit['trans']) @ rot.T + np.array(camera['t']) / 1000) * 1000
        np.testing.assert_allclose(mesh - mesh.mean(0), true - true.mean(0), atol=0.5)


def test_h36m_evaluate_and_summarize(h36m_test, tree_root, capsys):
    targets = [as_numpy(h36m_test[i][1]['smpl_mesh_cam']) for i in range(len(h36m_test))]
    regressor = np.load(tree_root / 'Human36M' / 'J_regressor_h36m_correct.npy')
    # GT as prediction (metres, any translation): MPJPE and PA-MPJPE are 0
    outs = [{'smpl_mesh_cam': t / 1000 + 0.3, 'smpl_mesh_cam_target': t} for t in targets]
    result = h36m_test.evaluate(outs, 0)
    np.testing.assert_allclose(result['mpjpe'], 0, atol=1e-3)
    np.testing.assert_allclose(result['pa_mpjpe'], 0, atol=1e-3)
    # a similarity-transformed prediction: PA-MPJPE 0, MPJPE = straight re-derivation
    rng = np.random.default_rng(3)
    outs = []
    for t in targets:
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        outs.append({'smpl_mesh_cam': 1.3 * (t / 1000) @ rot.T + rng.normal(size=3),
                     'smpl_mesh_cam_target': t})
    first = h36m_test.evaluate(outs[:2], 0)
    second = h36m_test.evaluate(outs[2:], 2)
    result = {k: first[k] + second[k] for k in first}
    np.testing.assert_allclose(result['pa_mpjpe'], 0, atol=1e-3)
    for out, mpjpe in zip(outs, result['mpjpe']):
        gt = regressor @ out['smpl_mesh_cam_target']
        pred = regressor @ (out['smpl_mesh_cam'] * 1000)
        gt, pred = (gt - gt[0])[list(H36M_EVAL)], (pred - pred[0])[list(H36M_EVAL)]
        assert mpjpe == pytest.approx(np.linalg.norm(gt - pred, axis=1).mean(), rel=1e-6)
        assert mpjpe > 10
    summary = h36m_test.summarize(result)
    assert summary['mpjpe'] == pytest.approx(np.mean(result['mpjpe']))
    assert summary['pa_mpjpe'] == pytest.approx(np.mean(result['pa_mpjpe']), abs=1e-6)
    h36m_test.print_eval_result(result)
    printed = capsys.readouterr().out
    assert f"MPJPE: {summary['mpjpe']:.2f} mm" in printed and 'PA MPJPE:' in printed


# ----------------------------------------------------------------------------- MuCo
def test_muco_closest_person_and_neighbours(muco, tree_root):
    db = load_json(tree_root / 'MuCo' / 'data' / 'MuCo-3DHP.json')
    fits = load_json(tree_root / 'MuCo' / 'data' / 'smpl_param.json')
    per_image = {}
    for ann in db['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
    assert len(muco) == len(db['images'])
    overlaps = []
    for data, img in zip(muco.datalist, db['images']):
        anns = per_image[img['id']]
        depths = [ann['keypoints_cam'][14][2] for ann in anns]
        chosen = anns[int(np.argmin(depths))]
        assert data['ann_id'] == chosen['id']
        np.testing.assert_allclose(data['joint_cam'], chosen['keypoints_cam'], rtol=1e-6)
        np.testing.assert_allclose(data['joint_img'][:, :2], chosen['keypoints_img'], rtol=1e-6)

        def iou(a, b):
            inter = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])) * \
                max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
            return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-5)
        neighbours = [a for a in anns if a is not chosen and iou(chosen['bbox'], a['bbox']) >= 0.1]
        assert data['num_overlap'] == len(neighbours)
        overlaps.append(len(neighbours))
        if neighbours:
            near = data['near_joints']
            assert near.shape == (len(neighbours), 17, 3)
            # COCO-17 rows 5..16 (shoulders..ankles) come from MuCo rows by name; the face rows stay 0
            coco_from_muco = {5: 5, 6: 2, 7: 6, 8: 3, 9: 7, 10: 4, 11: 11, 12: 8, 13: 12, 14: 9, 15: 13, 16: 10}
            for k, nb in enumerate(neighbours):
                for coco_row, muco_row in coco_from_muco.items():
                    np.testing.assert_allclose(near[k, coco_row, :2], nb['keypoints_img'][muco_row], rtol=1e-6)
                np.testing.assert_array_equal(near[k, 5:, 2], 1)
                np.testing.assert_array_equal(near[k, :5], 0)
        else:
            np.testing.assert_array_equal(data['near_joints'], np.zeros((1, 17, 3)))
        assert (data['smpl_param'] is None) == (str(chosen['id']) not in fits)
    assert min(overlaps) == 0 and max(overlaps) >= 1


def test_muco_samples_and_fit_validity(muco, tree_root):
    smpl = muco.smpl
    regressor = np.load(tree_root / 'Human36M' / 'J_regressor_h36m_correct.npy')
    rows, smpl_rows = mapped_rows(MUCO_TO_SMPL30)
    seen = set()
    for idx, data in enumerate(muco.datalist):
        sample = muco[idx]
        check_train_sample(sample)
        inputs, targets, meta = sample
        joint_img = as_numpy(targets['orig_joint_img'])
        assert joint_img[0, 2] == pytest.approx(32.0, abs=1e-4)      # SMPL-30 pelvis <- MuCo root
        z_rel = data['joint_cam'][rows, 2] - data['joint_cam'][14, 2]
        np.testing.assert_allclose(np.sort(joint_img[smpl_rows, 2]), np.sort((z_rel / 1000 + 1) / 2 * 64), atol=1e-3)
        joints = as_numpy(inputs['joints'])
        clean = [29, 0, 6, 15, 22, 23, 10, 11]     # Head_top, Pelvis, Spine, Head, hands, toes stay exact
        np.testing.assert_allclose(joints[clean], joint_img[clean, :2], atol=1e-4)
        expected = 0.0
        if data['smpl_param'] is not None:
            fit = data['smpl_param']
            pred = regressor @ (smpl_mesh(smpl, fit['pose'], fit['shape'], fit['trans']) * 1000)
            gt = data['joint_cam'][list(MUCO_FOR_H36M_COMMON)]
            pred = pred[list(H36M_MUCO_COMMON)]
            error = np.linalg.norm(pred - pred.mean(0) - gt + gt.mean(0), axis=1).mean()
            assert error < 1.0 or error > 40.0, error
            expected = float(error <= 25.0)
            # camera-frame fit in mm: the fit pelvis depth is normalised to 32
            assert as_numpy(targets['fit_joint_img'])[0, 2] == pytest.approx(32.0, abs=1e-4)
        assert float(meta['is_valid_fit']) == expected
        seen.add((data['smpl_param'] is not None, expected))
    assert seen == {(True, 1.0), (True, 0.0), (False, 0.0)}


def test_muco_flip_and_mannequin(muco, tree_root):
    cfg.color_factor = 0.0
    smpl = muco.smpl
    db = load_json(tree_root / 'MuCo' / 'data' / 'MuCo-3DHP.json')
    idx = next(i for i, d in enumerate(muco.datalist) if d['smpl_param'] is not None)
    data = muco.datalist[idx]
    img = db['images'][idx]
    rows, smpl_rows = mapped_rows(MUCO_TO_SMPL30)
    samples = find_flips(muco, idx)
    cam_plain = as_numpy(samples[False][1]['orig_joint_cam'])[smpl_rows]
    cam_flip = as_numpy(samples[True][1]['orig_joint_cam'])[smpl_rows]
    flip_in_rows = [(rows.index(a), rows.index(b)) for a, b in MUCO_FLIP]
    np.testing.assert_allclose(cam_flip, swap_rows(cam_plain * [-1, 1, 1], flip_in_rows), atol=1e-6)
    fit = data['smpl_param']
    mesh = smpl_mesh(smpl, fit['pose'], fit['shape'], fit['trans'])
    uv = mesh[:, :2] / mesh[:, 2:] * np.array(img['f']) + np.array(img['c'])
    for do_flip, sample in samples.items():
        verts_crop = crop_map(data['bbox'], img['width'], do_flip)(uv)
        joints_crop = as_numpy(sample[1]['orig_joint_img'])[smpl_rows, :2] * 4
        assert_joints_on_mannequin(as_numpy(sample[0]['img']), joints_crop, verts_crop)


# ----------------------------------------------------------------------------- errors
def test_muco_rejects_other_splits(data_cfg):
    from data.MuCo.MuCo import MuCo
    with pytest.raises(ValueError, match='train'):
        MuCo(to_tensor, 'test')


def test_missing_annotation_files_are_named(data_cfg, tree_root, tmp_path):
    from data.Human36M.Human36M import Human36M
    from data.MuCo.MuCo import MuCo
    root = copy_tree(tree_root, tmp_path / 'data', ('Human36M', 'MuCo'))
    cfg.data_dir = str(root)
    missing = root / 'Human36M' / 'annotations' / 'Human36M_subject7_joint_3d.json'
    missing.unlink()
    with pytest.raises(FileNotFoundError, match='Human36M_subject7_joint_3d.json') as err:
        Human36M(to_tensor, 'train')
    assert 'subject' in str(err.value) and 'annotations' in str(err.value)
    (root / 'MuCo' / 'data' / 'smpl_param.json').unlink()
    with pytest.raises(FileNotFoundError, match='smpl_param.json'):
        MuCo(to_tensor, 'train')
    cfg.use_gt_info = False
    with pytest.raises(FileNotFoundError, match='bbox_root_human36m_output.json'):
        Human36M(to_tensor, 'test')
    # with the RootNet file present, its box and root depth are used
    kept = expected_h36m_frames(root, 'test')
    rootnet = [{'image_id': img_id, 'bbox': [10.0 + k, 20.0, 100.0, 100.0], 'root_cam': [0.0, 0.0, 4000.0 + k]}
               for k, img_id in enumerate(kept)]
    (root / 'Human36M' / 'rootnet_output').mkdir()
    (root / 'Human36M' / 'rootnet_output' / 'bbox_root_human36m_output.json').write_text(json.dumps(rootnet))
    dataset = Human36M(to_tensor, 'test')
    assert [d['img_id'] for d in dataset.datalist] == kept
    for k, data in enumerate(dataset.datalist):
        np.testing.assert_array_equal(data['bbox'], [10.0 + k, 20.0, 100.0, 100.0])
        assert data['root_joint_depth'] == 4000.0 + k


def test_unreadable_image_and_degenerate_box(data_cfg, tree_root, tmp_path, caplog):
    from data.Human36M.Human36M import Human36M
    root = copy_tree(tree_root, tmp_path / 'data')
    cfg.data_dir = str(root)
    reference = Human36M(to_tensor, 'train')
    broken = Path(reference.datalist[0]['img_path'])
    broken.write_bytes(b'not a jpeg')
    with pytest.raises(IOError, match=str(broken.name)):
        reference[0]
    # a zero-width box is dropped at load time and counted
    path = root / 'Human36M' / 'annotations' / 'Human36M_subject1_data.json'
    data = load_json(path)
    target = next(a for a in data['annotations'] if a['image_id'] == reference.datalist[0]['img_id'])
    target['bbox'][2] = 0.0
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        dataset = Human36M(to_tensor, 'train')
    assert dataset.skipped_bbox_count == 1 and len(dataset) == len(reference) - 1
    assert 'degenerate' in caplog.text and '1' in caplog.text
    # subject data files must share their top-level keys
    other = root / 'Human36M' / 'annotations' / 'Human36M_subject5_data.json'
    content = load_json(other)
    content['extra'] = []
    other.write_text(json.dumps(content))
    with pytest.raises(ValueError, match='extra'):
        Human36M(to_tensor, 'train')
