"""MSCOCO and MPII loaders and their synthetic writers on the synthetic data tree.

Independent references: the JSON files and images read directly, the bbox / crop
box and crop formulas (docs/METHOD.md, "Images, boxes and crops") re-derived here, the shared SMPL layer for meshes,
and the renderer's per-pixel mesh index for silhouettes.
"""
import json
import logging
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torchvision.transforms import ToTensor

from data.MPII.MPII import MPII
from data.MSCOCO.MSCOCO import MSCOCO

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

SMPL30 = ('Pelvis', 'L_Hip', 'R_Hip', 'Torso', 'L_Knee', 'R_Knee', 'Spine', 'L_Ankle', 'R_Ankle', 'Chest',
          'L_Toe', 'R_Toe', 'Neck', 'L_Thorax', 'R_Thorax', 'Head', 'L_Shoulder', 'R_Shoulder', 'L_Elbow',
          'R_Elbow', 'L_Wrist', 'R_Wrist', 'L_Hand', 'R_Hand', 'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear',
          'Head_top')
COCO18 = ('Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow',
          'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle', 'Pelvis')
MPII16 = ('R_Ankle', 'R_Knee', 'R_Hip', 'L_Hip', 'L_Knee', 'L_Ankle', 'Pelvis', 'Thorax', 'Neck', 'Head_top',
          'R_Wrist', 'R_Elbow', 'R_Shoulder', 'L_Shoulder', 'L_Elbow', 'L_Wrist')
# Where each source joint lands in SMPL-30 (docs/METHOD.md, "Joint conventions").
COCO18_TO_SMPL = (24, 25, 26, 27, 28, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8, 0)
MPII_TO_SMPL = (8, 5, 2, 1, 4, 7, 0, None, 12, 29, 21, 19, 17, 16, 18, 20)
COCO_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
SMPL_POSE_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
SMPL_PAIRS = SMPL_POSE_PAIRS + ((25, 26), (27, 28))

EXPECTED_KEYS = {
    'inputs': {'img': (3, 256, 256), 'joints': (30, 2), 'joints_mask': (30, 1)},
    'targets': {'orig_joint_img': (30, 3), 'fit_joint_img': (30, 3), 'orig_joint_cam': (30, 3),
                'fit_joint_cam': (30, 3), 'pose_param': (72,), 'shape_param': (10,)},
    'meta_info': {'orig_joint_valid': (30, 1), 'orig_joint_trunc': (30, 1), 'fit_param_valid': (72,),
                  'fit_joint_trunc': (30, 1), 'is_valid_fit': (), 'is_3D': ()},
}


def load(path):
    with open(path) as f:
        return json.load(f)


def coco_files(root):
    ann = Path(root) / 'MSCOCO' / 'annotations'
    return (load(ann / 'person_keypoints_train2017.json'), load(ann / 'MSCOCO_train_SMPL_NeuralAnnot.json'),
            load(ann / 'person_keypoints_val2017.json'))


def mpii_files(root):
    ann = Path(root) / 'MPII' / 'data' / 'annotations'
    return load(ann / 'train.json'), load(ann / 'MPII_train_SMPL_NeuralAnnot.json')


def processed_bbox(bbox, width, height):
    """The box processing written out: sanitise, square, x1.25 (None when unusable)."""
    x, y, w, h = bbox
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
    if not (w * h > 0 and x2 >= x1 and y2 >= y1):
        return None
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    side = max(w, h) * 1.25
    return np.array([cx - side / 2, cy - side / 2, side, side])


def crop_affine(bbox, width, do_flip):
    """The crop map in closed form for scale 1, rot 0: T(p) = 256/w (p - c) + 128 (flipped-image coordinates)."""
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    if do_flip:
        cx = width - 1 - cx
    return np.array([[256 / w, 0, 128 - 256 / w * cx], [0, 256 / h, 128 - 256 / h * cy]])


_INDEX_MAPS = {}


def mesh_index_map(smpl, people, width, height, focal, princpt):
    """(H, W) int: index of the rendered fit mesh under each pixel, -1 on background (cached per scene)."""
    from common.utils.render import render_meshes
    values = np.concatenate([np.ravel(focal), np.ravel(princpt)] + [np.ravel(p['trans']) for p in people])
    key = tuple(np.round(values.astype(np.float64), 3).tolist()) + (width, height)
    if key in _INDEX_MAPS:
        return _INDEX_MAPS[key]
    meshes = []
    for fit in people:
        with torch.no_grad():
            verts, _ = smpl.layer['neutral'](*(torch.tensor(np.asarray(fit[k], np.float32)[None])
                                               for k in ('pose', 'shape', 'trans')))
        meshes.append(verts[0].numpy())
    _, _, index = render_meshes(np.zeros((height, width, 3), np.uint8), meshes, smpl.face, focal, princpt,
                                return_depth=True)
    _INDEX_MAPS[key] = index
    return index


def smpl_joints30(smpl, fit):
    with torch.no_grad():
        verts, _ = smpl.layer['neutral'](*(torch.tensor(np.asarray(fit[k], np.float32)[None])
                                           for k in ('pose', 'shape', 'trans')))
    return smpl.joint_regressor.astype(np.float64) @ verts[0].double().numpy()


def project(points, cam):
    return points[:, :2] / points[:, 2:] * np.asarray(cam['focal']) + np.asarray(cam['princpt'])


@pytest.fixture
def seeded(data_cfg):
    data_cfg.seed = 0
    return data_cfg


# ------------------------------------------------------------------- the written tree
def test_mscoco_files_follow_the_real_format(data_cfg):
    root = Path(data_cfg.data_dir)
    train, fits, val = coco_files(root)
    assert (root / 'MSCOCO' / 'J_regressor_coco_hip_smpl.npy').is_file()
    for db, split in ((train, 'train'), (val, 'val')):
        assert [c['id'] for c in db['categories']] == [1]
        assert len({im['id'] for im in db['images']}) == len(db['images'])
        assert len({a['id'] for a in db['annotations']}) == len(db['annotations'])
        for ann in db['annotations']:
            kps = np.array(ann['keypoints']).reshape(17, 3)
            assert ann['category_id'] == 1 and ann['iscrowd'] in (0, 1)
            assert set(kps[:, 2]) <= {0, 1, 2} and ann['num_keypoints'] == int((kps[:, 2] > 0).sum())
            assert not kps[kps[:, 2] == 0].any()      # unlabelled joints are [0, 0, 0]
        for im in db['images']:
            img = cv2.imread(str(root / 'MSCOCO' / 'images' / f'{split}2017' / im['file_name']))
            assert img is not None and img.shape == (im['height'], im['width'], 3)
    per_image = np.bincount([a['image_id'] for a in train['annotations']])
    assert per_image.max() >= 2
    ann_ids = {str(a['id']) for a in train['annotations']}
    assert fits and set(fits) <= ann_ids and len(fits) < len(ann_ids)
    for entry in fits.values():
        assert [len(entry['smpl_param'][k]) for k in ('pose', 'shape', 'trans')] == [72, 10, 3]
        assert [len(entry['cam_param'][k]) for k in ('focal', 'princpt')] == [2, 2]
    kept = [a for a in train['annotations'] if not a['iscrowd'] and a['num_keypoints'] > 0]
    assert any(0 < a['num_keypoints'] < 17 for a in kept)
    assert any(a['iscrowd'] for a in train['annotations'])
    assert any(a['num_keypoints'] == 0 for a in train['annotations'])


def test_mpii_files_follow_the_real_format(data_cfg):
    root = Path(data_cfg.data_dir)
    train, fits = mpii_files(root)
    assert 'categories' not in train
    for ann in train['annotations']:
        kps = np.array(ann['keypoints']).reshape(16, 3)
        assert not kps[kps[:, 2] == 0].any()
    assert any((np.array(a['keypoints']).reshape(16, 3)[:, 2] == 0).any() for a in train['annotations'])
    for im in train['images']:
        assert im['file_name'].startswith('images/')
        img = cv2.imread(str(root / 'MPII' / 'data' / im['file_name']))
        assert img is not None and img.shape == (im['height'], im['width'], 3)
    assert set(fits) < {str(a['id']) for a in train['annotations']}


@pytest.mark.parametrize('dataset', ['MSCOCO', 'MPII'])
def test_keypoints_are_projected_fit_joints_on_the_rendered_mannequin(data_cfg, dataset):
    from common.utils.smpl import get_smpl
    smpl = get_smpl(data_cfg.body_model_paths())
    root = Path(data_cfg.data_dir)
    train, fits = coco_files(root)[:2] if dataset == 'MSCOCO' else mpii_files(root)
    for im in train['images']:
        anns = [a for a in train['annotations'] if a['image_id'] == im['id'] and str(a['id']) in fits]
        if not anns:
            continue
        people = [fits[str(a['id'])]['smpl_param'] for a in anns]
        cam = fits[str(anns[0]['id'])]['cam_param']
        index = mesh_index_map(smpl, people, im['width'], im['height'], cam['focal'], cam['princpt'])
        silhouette = cv2.dilate((index >= 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        for ann, fit in zip(anns, people):
            joints = smpl_joints30(smpl, fit)
            if dataset == 'MSCOCO':
                kps = np.array(ann['keypoints']).reshape(17, 3)
                expected = project(joints[list(COCO18_TO_SMPL[:17])], cam)
            else:
                kps = np.array(ann['keypoints']).reshape(16, 3)
                thorax = (joints[16] + joints[17]) / 2
                expected = project(np.stack([thorax if m is None else joints[m] for m in MPII_TO_SMPL]), cam)
            valid = kps[:, 2] > 0
            np.testing.assert_allclose(kps[valid, :2], expected[valid], atol=0.02)
            cols, rows = np.round(kps[valid, :2]).astype(int).T
            assert silhouette[rows, cols].all()


# ------------------------------------------------------------------------------- load_data
def test_mscoco_datalist_filters_and_neighbours(data_cfg, caplog):
    train, fits, _ = coco_files(data_cfg.data_dir)
    images = {im['id']: im for im in train['images']}
    kept, degenerate = [], 0
    for ann in train['annotations']:
        if ann['iscrowd'] or ann['num_keypoints'] == 0:
            continue
        im = images[ann['image_id']]
        if processed_bbox(ann['bbox'], im['width'], im['height']) is None:
            degenerate += 1
            continue
        kept.append(ann)
    assert degenerate == 1
    with caplog.at_level(logging.WARNING):
        ds = MSCOCO(ToTensor(), 'train')
    assert 'skipped 1 annotation' in caplog.text
    assert [e['ann_id'] for e in ds.datalist] == [a['id'] for a in kept]
    assert any(e['num_overlap'] > 0 for e in ds.datalist)
    for entry, ann in zip(ds.datalist, kept):
        im = images[ann['image_id']]
        np.testing.assert_allclose(entry['bbox'], processed_bbox(ann['bbox'], im['width'], im['height']), rtol=1e-5)
        kps = np.array(ann['keypoints'], dtype=np.float64).reshape(17, 3)
        pelvis = (kps[11, :2] + kps[12, :2]) / 2
        valid = kps[:, 2] > 0
        np.testing.assert_allclose(entry['joint_img'][:17, :2], kps[:, :2])
        np.testing.assert_allclose(entry['joint_img'][17], [*pelvis, float(valid[11] and valid[12])])
        np.testing.assert_array_equal(entry['joint_img'][:17, 2], valid)
        assert (entry['smpl_param'] is not None) == (str(ann['id']) in fits)
        neighbours = []
        for other in kept:
            if other['image_id'] == ann['image_id'] and other['id'] != ann['id']:
                a, b = np.array(ann['bbox']), np.array(other['bbox'])
                iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
                ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
                if iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih + 1e-5) >= 0.1:
                    neighbours.append(other)
        assert entry['num_overlap'] == len(neighbours)
        if neighbours:
            got = entry['near_joints'][:, :17, :2]
            np.testing.assert_allclose(got, [np.array(o['keypoints']).reshape(17, 3)[:, :2] for o in neighbours])
        else:
            assert entry['near_joints'].shape == (1, 18, 3) and not entry['near_joints'].any()


def test_mpii_datalist_and_coco18_neighbours(data_cfg):
    train, fits = mpii_files(data_cfg.data_dir)
    ds = MPII(ToTensor(), 'train')
    assert [e['ann_id'] for e in ds.datalist] == [a['id'] for a in train['annotations']]
    assert all(e['img_path'].endswith(im) for e, im in zip(
        ds.datalist, [next(i['file_name'] for i in train['images'] if i['id'] == a['image_id'])
                      for a in train['annotations']]))
    assert any(e['num_overlap'] > 0 for e in ds.datalist)
    by_id = {a['id']: np.array(a['keypoints']).reshape(16, 3) for a in train['annotations']}
    for entry in ds.datalist:
        assert (entry['smpl_param'] is not None) == (str(entry['ann_id']) in fits)
        if entry['num_overlap']:
            near = entry['near_joints']
            assert near.shape[1:] == (18, 3) and not near[:, :5].any()    # COCO face joints have no MPII source
            for k, name in enumerate(COCO18[5:], start=5):
                src = np.array([by_id[o][MPII16.index(name)] for o in _neighbour_ids(ds, entry)])
                np.testing.assert_allclose(near[:, k, :2], src[:, :2])
                np.testing.assert_array_equal(near[:, k, 2], src[:, 2] > 0)


def _neighbour_ids(ds, entry):
    same = [e for e in ds.datalist if e['img_id'] == entry['img_id'] and e['ann_id'] != entry['ann_id']]
    out = []
    for other in same:
        a, b = entry['tight_bbox'], other['tight_bbox']
        iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        if iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih + 1e-5) >= 0.1:
            out.append(other['ann_id'])
    return out


# ----------------------------------------------------------------------------- samples
def check_contract(sample, smpl_rows, has_fit):
    for part, (name, expected) in zip(sample, EXPECTED_KEYS.items()):
        assert set(part) == set(expected), name
        for key, shape in expected.items():
            assert tuple(part[key].shape) == shape, key
            assert part[key].dtype in (np.float32, torch.float32), key
    inputs, targets, meta = sample
    img = inputs['img']
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    for key in ('orig_joint_valid', 'orig_joint_trunc', 'fit_joint_trunc'):
        assert set(np.unique(meta[key])) <= {0.0, 1.0}
    np.testing.assert_array_equal(inputs['joints_mask'], meta['orig_joint_trunc'])
    assert (meta['orig_joint_trunc'] <= meta['orig_joint_valid']).all()
    # 2D sets: column 2 of orig_joint_img is the validity flag; no camera joints.
    np.testing.assert_array_equal(targets['orig_joint_img'][:, 2], meta['orig_joint_valid'][:, 0])
    assert not targets['orig_joint_cam'].any() and float(meta['is_3D']) == 0.0
    absent = np.setdiff1d(np.arange(30), smpl_rows)
    for array in (inputs['joints'], targets['orig_joint_img'], meta['orig_joint_valid']):
        assert not np.asarray(array)[absent].any()
    assert float(meta['is_valid_fit']) == float(has_fit)
    pose_valid = meta['fit_param_valid'].reshape(24, 3)
    assert pose_valid[[7, 8, 10, 11, 20, 21, 22, 23]].sum() == 0 and pose_valid.sum() == 48
    if not has_fit:
        for array in (targets['fit_joint_img'], targets['fit_joint_cam'], targets['pose_param'],
                      targets['shape_param'], meta['fit_joint_trunc']):
            assert not array.any()
        return
    # Depth normalisation: z_hm = (dz / (2 m / 2) + 1) / 2 * 64 relative to the fit pelvis (rot = 0).
    np.testing.assert_allclose(targets['fit_joint_img'][:, 2], (targets['fit_joint_cam'][:, 2] + 1) * 32, atol=1e-3)
    assert targets['fit_joint_img'][0, 2] == pytest.approx(32.0) and not targets['fit_joint_cam'][0].any()
    inside = ((targets['fit_joint_img'] >= 0) & (targets['fit_joint_img'] < 64)).all(1)
    np.testing.assert_array_equal(meta['fit_joint_trunc'][:, 0], inside)


@pytest.mark.parametrize('name', ['MSCOCO', 'MPII'])
def test_training_samples_follow_the_contract(seeded, name):
    cls, rows = (MSCOCO, COCO18_TO_SMPL) if name == 'MSCOCO' else (MPII, [m for m in MPII_TO_SMPL if m is not None])
    ds = cls(ToTensor(), 'train')
    sanitised = 0
    for idx, entry in enumerate(ds.datalist):
        sample = ds[idx]
        has_fit = entry['smpl_param'] is not None
        check_contract(sample, rows, has_fit)
        if has_fit and np.abs(entry['smpl_param']['shape']).max() > 3:
            assert not sample[1]['shape_param'].any() and sample[1]['pose_param'].any()
            sanitised += 1
    assert sanitised == (1 if name == 'MSCOCO' else 0)


def _flip_state(sample, entry, img_width):
    """Which of the two independently computed crops (plain / mirrored) the sample's image is."""
    image = cv2.imread(entry['img_path'])[:, :, ::-1].astype(np.float32)
    got = np.asarray(sample[0]['img']).transpose(1, 2, 0) * 255
    errors = []
    for do_flip in (False, True):
        source = image[:, ::-1] if do_flip else image
        crop = cv2.warpAffine(np.ascontiguousarray(source), crop_affine(entry['bbox'], img_width, do_flip),
                              (256, 256), flags=cv2.INTER_LINEAR)
        errors.append(np.abs(crop - got).mean())
    assert min(errors) < 0.5 < max(errors), errors
    return bool(np.argmin(errors))


@pytest.mark.parametrize('name', ['MSCOCO', 'MPII'])
def test_crops_flips_and_gt_joints_land_on_the_mannequin(seeded, name):
    """Crop maps, flips, and GT joints on the rendered person; fit joints agree with GT keypoints."""
    from common.utils.smpl import get_smpl
    smpl = get_smpl(seeded.body_model_paths())
    seeded.color_factor = 0.0     # exact crops to compare with
    cls, src_names, src_to_smpl = ((MSCOCO, COCO18, COCO18_TO_SMPL) if name == 'MSCOCO'
                                   else (MPII, MPII16, MPII_TO_SMPL))
    pairs = COCO_PAIRS if name == 'MSCOCO' else ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
    ds = cls(ToTensor(), 'train')
    seen_flips, worst = set(), {False: 0.0, True: 0.0}
    silhouettes = {}
    for epoch in range(2):
        ds.set_epoch(epoch)
        for idx, entry in enumerate(ds.datalist):
            height, width = entry['img_shape']
            sample = ds[idx]
            do_flip = _flip_state(sample, entry, width)
            seen_flips.add(do_flip)
            # GT keypoints through the independent crop affine (mirrored and pair-swapped when flipped).
            kps = entry['joint_img'].astype(np.float64).copy()
            if do_flip:
                kps[:, 0] = width - 1 - kps[:, 0]
                for a, b in pairs:
                    kps[[a, b]] = kps[[b, a]]
            trans = crop_affine(entry['bbox'], width, do_flip)
            crop = kps[:, :2] @ trans[:, :2].T + trans[:, 2]
            rows = [m for m in src_to_smpl if m is not None]
            src = [k for k, m in enumerate(src_to_smpl) if m is not None]
            got = sample[1]['orig_joint_img']
            np.testing.assert_allclose(got[rows, :2], crop[src] / 4, atol=2e-3)
            np.testing.assert_array_equal(got[rows, 2], kps[src, 2])
            # Every valid, in-crop GT joint lies on a rendered person.
            fitted = [e for e in ds.datalist if e['img_id'] == entry['img_id'] and e['smpl_param'] is not None]
            if entry['smpl_param'] is None:
                continue
            if entry['img_id'] not in silhouettes:
                index = mesh_index_map(smpl, [e['smpl_param'] for e in fitted], width, height,
                                       fitted[0]['cam_param']['focal'], fitted[0]['cam_param']['princpt'])
                # Face keypoints are surface vertices: allow 2 image pixels around the silhouette.
                silhouettes[entry['img_id']] = cv2.dilate((index >= 0).astype(np.uint8), np.ones((5, 5), np.uint8))
            mask = silhouettes[entry['img_id']]
            mask_crop = cv2.warpAffine(mask[:, ::-1].copy() if do_flip else mask, trans, (256, 256),
                                       flags=cv2.INTER_NEAREST)
            trunc = sample[2]['orig_joint_trunc'][:, 0] > 0
            cols, rows_px = np.floor(got[trunc, :2] * 4).astype(int).T
            assert mask_crop[rows_px, cols].all()
            # The fit's joints project onto the GT keypoints (the writer made both from one mesh);
            # the pelvis differs by definition (hip midpoint vs SMPL pelvis).
            fit = sample[1]['fit_joint_img']
            body = [m for m, n in zip(rows, [src_names[k] for k in src]) if n not in ('Pelvis', 'Thorax')]
            valid = sample[2]['orig_joint_valid'][body, 0] > 0
            error = np.abs(fit[body, :2] - got[body, :2])[valid].max()
            worst[do_flip] = max(worst[do_flip], error)
    assert seen_flips == {False, True}
    print('largest fit-vs-GT joint gap (heatmap px):', worst)
    assert worst[False] < 0.01
    # Mirroring a body in camera space matches the mirrored image only up to perspective.
    assert worst[True] < 0.5


def test_flipped_fit_mirrors_the_unflipped_fit(seeded):
    ds = MSCOCO(ToTensor(), 'train')
    idx = next(i for i, e in enumerate(ds.datalist) if e['smpl_param'] is not None)
    by_state = {}
    for epoch in range(12):
        ds.set_epoch(epoch)
        sample = ds[idx]
        nose_x = sample[1]['orig_joint_img'][24, 0]
        plain = crop_affine(ds.datalist[idx]['bbox'], ds.datalist[idx]['img_shape'][1], False)
        kp = ds.datalist[idx]['joint_img'][0]
        flipped = abs(nose_x - (plain[0, 0] * kp[0] + plain[0, 2]) / 4) > 1e-2
        by_state.setdefault(flipped, sample)
    plain, flipped = by_state[False][1], by_state[True][1]
    swap = np.arange(30)
    for a, b in SMPL_PAIRS:
        swap[[a, b]] = [b, a]
    # Root-relative camera joints: mirrored x, left/right exchanged (the mannequin is symmetric).
    np.testing.assert_allclose(flipped['fit_joint_cam'], plain['fit_joint_cam'][swap] * [-1, 1, 1], atol=2e-4)
    # The pelvis lands on the mirrored crop column 64 - x at the same height and depth.
    np.testing.assert_allclose(flipped['fit_joint_img'][0], [64 - plain['fit_joint_img'][0, 0],
                                                             *plain['fit_joint_img'][0, 1:]], atol=1e-3)
    mirror = np.diag([-1.0, 1.0, 1.0])
    for j in range(24):
        k = swap[j]
        expected = mirror @ Rotation.from_rotvec(plain['pose_param'][3 * k:3 * k + 3]).as_matrix() @ mirror
        np.testing.assert_allclose(Rotation.from_rotvec(flipped['pose_param'][3 * j:3 * j + 3]).as_matrix(),
                                   expected, atol=1e-5)
    np.testing.assert_array_equal(flipped['shape_param'], plain['shape_param'])


def test_seeded_samples_repeat_and_change_with_the_epoch(seeded):
    first, second = MSCOCO(ToTensor(), 'train'), MSCOCO(ToTensor(), 'train')
    idx = len(first) - 1

    def flat(sample):
        return [np.asarray(v) for part in sample for _, v in sorted(part.items())]

    for a, b in zip(flat(first[idx]), flat(second[idx])):
        np.testing.assert_array_equal(a, b)
    second.set_epoch(1)
    assert any(not np.array_equal(a, b) for a, b in zip(flat(first[idx]), flat(second[idx])))


@pytest.mark.slow
def test_seeded_batches_do_not_depend_on_workers(seeded):
    ds = MPII(ToTensor(), 'train')
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers)
        batches.append(next(iter(loader)))
    for part_a, part_b in zip(*batches):
        for key in part_a:
            torch.testing.assert_close(part_a[key], part_b[key], rtol=0, atol=0)
    assert batches[0][2]['is_valid_fit'].dtype == torch.float32 and batches[0][2]['is_valid_fit'].shape == (3,)


# -------------------------------------------------------------------------- other splits
def test_mscoco_val_debug_split(data_cfg):
    _, _, val = coco_files(data_cfg.data_dir)
    ds = MSCOCO(ToTensor(), 'val')
    assert 0 < len(ds) <= 101 and len(ds) == sum(1 for a in val['annotations'] if a['num_keypoints'] > 0)
    inputs, targets, meta = ds[0]
    assert set(inputs) == {'img', 'joints', 'joints_mask'} and targets == {} and set(meta) == {'bbox'}
    assert inputs['joints'].shape == (30, 3) and inputs['joints_mask'].shape == (30, 1)
    entry = ds.datalist[0]
    trans = crop_affine(entry['bbox'], entry['img_shape'][1], False)
    crop = entry['joint_img'][:, :2] @ trans[:, :2].T + trans[:, 2]
    np.testing.assert_allclose(inputs['joints'][list(COCO18_TO_SMPL), :2], crop / 4, atol=2e-3)
    np.testing.assert_array_equal(inputs['joints'][list(COCO18_TO_SMPL), 2], entry['joint_img'][:, 2])


def test_mpii_other_split_is_the_unaugmented_training_pipeline(data_cfg):
    ds = MPII(ToTensor(), 'test')
    inputs, targets, meta = ds[0]
    assert set(targets) == set(EXPECTED_KEYS['targets'])
    entry = ds.datalist[0]
    trans = crop_affine(entry['bbox'], entry['img_shape'][1], False)
    image = cv2.imread(entry['img_path'])[:, :, ::-1].astype(np.float32)
    crop = cv2.warpAffine(np.ascontiguousarray(image), trans, (256, 256), flags=cv2.INTER_LINEAR) / 255
    assert np.abs(np.asarray(inputs['img']).transpose(1, 2, 0) - crop).mean() < 2e-3


def test_unknown_mscoco_split_is_rejected(data_cfg):
    with pytest.raises(ValueError, match="'train' and 'val'"):
        MSCOCO(ToTensor(), 'test')


# ------------------------------------------------------------------------------- bad input
@pytest.fixture
def empty_root(tmp_path, data_cfg):
    shutil.copy(Path(data_cfg.data_dir) / 'J_regressor_extra.npy', tmp_path)
    data_cfg.data_dir = str(tmp_path)
    return tmp_path


def test_missing_annotation_files_are_named(empty_root):
    with pytest.raises(FileNotFoundError, match='person_keypoints_train2017.json') as err:
        MSCOCO(ToTensor(), 'train')
    assert 'MSCOCO/annotations' in str(err.value)
    with pytest.raises(FileNotFoundError, match='MPII/data/annotations/train.json'):
        MPII(ToTensor(), 'train')


def test_missing_neuralannot_file_is_named(empty_root, synthetic_data_root):
    ann = empty_root / 'MPII' / 'data' / 'annotations'
    ann.mkdir(parents=True)
    shutil.copy(Path(synthetic_data_root) / 'MPII' / 'data' / 'annotations' / 'train.json', ann)
    with pytest.raises(FileNotFoundError, match='MPII_train_SMPL_NeuralAnnot.json'):
        MPII(ToTensor(), 'train')


def test_malformed_keypoints_name_file_and_annotation(empty_root, synthetic_data_root):
    ann = empty_root / 'MPII' / 'data' / 'annotations'
    ann.mkdir(parents=True)
    train, _ = mpii_files(synthetic_data_root)
    train['annotations'][0]['keypoints'] = train['annotations'][0]['keypoints'][:-3]
    (ann / 'train.json').write_text(json.dumps(train))
    (ann / 'MPII_train_SMPL_NeuralAnnot.json').write_text('{}')
    with pytest.raises(ValueError, match=f"annotation id {train['annotations'][0]['id']}"):
        MPII(ToTensor(), 'train')


def test_missing_coco_fields_are_named(empty_root, synthetic_data_root):
    ann = empty_root / 'MSCOCO' / 'annotations'
    ann.mkdir(parents=True)
    train, _, _ = coco_files(synthetic_data_root)
    del train['annotations'][1]['iscrowd']
    (ann / 'person_keypoints_train2017.json').write_text(json.dumps(train))
    (ann / 'MSCOCO_train_SMPL_NeuralAnnot.json').write_text('{}')
    with pytest.raises(ValueError, match=f"annotation id {train['annotations'][1]['id']} lacks .*iscrowd"):
        MSCOCO(ToTensor(), 'train')


def test_unreadable_and_missing_images_are_named(empty_root, synthetic_data_root):
    shutil.copytree(Path(synthetic_data_root) / 'MPII', empty_root / 'MPII')
    ds = MPII(ToTensor(), 'train')
    Path(ds.datalist[0]['img_path']).write_bytes(b'this is not a JPEG file')
    with pytest.raises(OSError, match=re.escape(ds.datalist[0]["img_path"])):
        ds[0]
    last = ds.datalist[-1]['img_path']
    Path(last).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(last)):
        ds[len(ds) - 1]
