"""3DPW loader and evaluation (docs/METHOD.md, "Evaluation") on the synthetic data tree."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from main.config import cfg
from tests.reference import ref_square_box

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

THR = 0.05
# Joint conventions: OpenPose-19 and COCO-19 index k -> SMPL-30 index.
OPENPOSE19_TO_SMPL30 = (24, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 26, 25, 28, 27, 0)
COCO19_TO_SMPL30 = (24, 25, 26, 27, 28, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8, 0, 12)
H36M_EVAL = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
CROWD = ('courtyard_hug_00', 'courtyard_dancing_00')


# ------------------------------------------------------------------ independent re-derivations
def ref_input(pose19, to_smpl, width, height):
    """The test input steps written out: (joints (30,3) heatmap + score, mask (30,), bbox)."""
    joints = np.zeros((30, 3))
    joints[list(to_smpl)] = pose19
    valid = joints[:, 2] > THR
    xs, ys = joints[valid, 0], joints[valid, 1]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    w, h = (xs.max() - xs.min()) * 1.2, (ys.max() - ys.min()) * 1.2
    bbox = ref_square_box([cx - w / 2, cy - h / 2, w, h], width, height)
    centre = bbox[:2] + bbox[2:] / 2
    crop = (joints[:, :2] - centre) * 256 / bbox[2:] + 128
    hm = crop / 4
    inside = (hm[:, 0] >= 0) & (hm[:, 0] < 64) & (hm[:, 1] >= 0) & (hm[:, 1] < 64)
    return np.concatenate([hm, joints[:, 2:]], 1), (valid & inside).astype(np.float32), bbox


def with_pelvis(joints, l_hip, r_hip):
    pelvis = [(joints[l_hip, 0] + joints[r_hip, 0]) / 2, (joints[l_hip, 1] + joints[r_hip, 1]) / 2,
              joints[l_hip, 2] * joints[r_hip, 2]]
    return np.concatenate([joints, [pelvis]])


def openpose19(ann):
    return with_pelvis(np.asarray(ann['openpose_result'], np.float64), 11, 8)


def coco19(entry):
    joints = with_pelvis(np.asarray(entry['coco_joints'], np.float64), 11, 12)
    neck = with_pelvis(joints, 5, 6)[-1]  # shoulder midpoint, product of scores
    return np.concatenate([joints, [neck]])


def has_usable_pose(pose19):
    """True when confident joints exist and span more than a pixel."""
    valid = pose19[:, 2] > THR
    if not valid.any():
        return False
    extent = pose19[valid, :2].max(0) - pose19[valid, :2].min(0)
    return extent.max() * 1.2 > 1.0


def load_json(root, name):
    with open(os.path.join(root, 'PW3D', 'data', name)) as f:
        return json.load(f)


def annotations_in_order(db, sequences=None):
    images = {img['id']: img for img in db['images']}
    out = []
    for ann in db['annotations']:
        img = images[ann['image_id']]
        if sequences is None or any(s in img['sequence'] for s in sequences):
            out.append((ann, img))
    return out


@pytest.fixture
def pw3d(data_cfg):
    from data.PW3D.PW3D import PW3D

    def make(crowd=False, transform=None, **overrides):
        cfg.crowd = crowd
        for key, value in overrides.items():
            setattr(cfg, key, value)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return PW3D(transform, 'train')
    return make


@pytest.fixture(scope='module')
def smplpytorch_layers(synthetic_smpl_dir):
    from smplpytorch.pytorch.smpl_layer import SMPL_Layer
    return {g: SMPL_Layer(gender=g, model_root=str(synthetic_smpl_dir)) for g in ('male', 'female', 'neutral')}


def smplpytorch_mesh(layers, param):
    with torch.no_grad():
        verts, _ = layers[param['gender']](torch.tensor([param['pose']], dtype=torch.float32),
                                           torch.tensor([param['shape']], dtype=torch.float32),
                                           torch.tensor([param['trans']], dtype=torch.float32))
    return verts[0].double().numpy()


# --------------------------------------------------------------------------------- loading
def test_sample_layout_and_input_pose_crop(pw3d, synthetic_data_root):
    import torchvision
    dataset = pw3d(transform=torchvision.transforms.ToTensor())
    db = load_json(synthetic_data_root, '3DPW_latest_test.json')
    expected = annotations_in_order(db)
    assert dataset.data_split == 'test'  # the 'train' argument is ignored
    assert len(dataset) == len(expected)
    inputs, targets, meta = dataset[0]
    assert set(inputs) == {'img', 'joints', 'joints_mask'}
    assert set(targets) == {'smpl_mesh_cam'}
    assert set(meta) == {'bb2img_trans', 'img2bb_trans', 'bbox', 'tight_bbox', 'aid'}
    assert inputs['img'].shape == (3, 256, 256) and inputs['img'].dtype == torch.float32
    assert 0 <= float(inputs['img'].min()) and float(inputs['img'].max()) <= 1 and float(inputs['img'].max()) > 0.2
    for dct, key, shape in ((inputs, 'joints', (30, 3)), (inputs, 'joints_mask', (30, 1)),
                            (targets, 'smpl_mesh_cam', (6890, 3)), (meta, 'bb2img_trans', (2, 3)),
                            (meta, 'img2bb_trans', (2, 3)), (meta, 'bbox', (4,)), (meta, 'tight_bbox', (4,))):
        assert dct[key].shape == shape and dct[key].dtype == np.float32, key
    assert isinstance(meta['aid'], int) and meta['aid'] == expected[0][0]['id']
    np.testing.assert_allclose(meta['tight_bbox'], expected[0][0]['bbox'], rtol=1e-6)
    assert set(np.unique(inputs['joints_mask'])) <= {0.0, 1.0}
    # bb2img inverts img2bb.
    pts = np.array([[3.0, 7.0], [200.0, 100.0]])
    img_pts = pts @ meta['bb2img_trans'][:, :2].T + meta['bb2img_trans'][:, 2]
    back = img_pts @ meta['img2bb_trans'][:, :2].T + meta['img2bb_trans'][:, 2]
    np.testing.assert_allclose(back, pts, atol=1e-2)

    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch[0]['joints'].shape == (2, 30, 3) and batch[2]['aid'].shape == (2,)


def test_input_joints_follow_the_spec(pw3d, synthetic_data_root):
    dataset = pw3d()
    entries = annotations_in_order(load_json(synthetic_data_root, '3DPW_latest_test.json'))
    checked = 0
    for index, (ann, img) in enumerate(entries):
        pose = openpose19(ann)
        if not has_usable_pose(pose) or checked >= 3:
            continue
        inputs, _, meta = dataset[index]
        joints, mask, bbox = ref_input(pose, OPENPOSE19_TO_SMPL30, img['width'], img['height'])
        np.testing.assert_allclose(meta['bbox'], bbox, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(inputs['joints'], joints, rtol=1e-4, atol=2e-3)
        np.testing.assert_array_equal(inputs['joints_mask'][:, 0], mask)
        assert mask.sum() >= 8
        checked += 1
    assert checked == 3


def test_gt_mesh_is_the_gendered_smpl_mesh(pw3d, synthetic_data_root, smplpytorch_layers):
    dataset = pw3d()
    entries = annotations_in_order(load_json(synthetic_data_root, '3DPW_latest_test.json'))
    genders = {ann['smpl_param']['gender'] for ann, _ in entries}
    assert genders == {'male', 'female'}
    for gender in ('male', 'female'):
        index = next(i for i, (ann, _) in enumerate(entries) if ann['smpl_param']['gender'] == gender)
        mesh = dataset[index][1]['smpl_mesh_cam']
        param = entries[index][0]['smpl_param']
        np.testing.assert_allclose(mesh, smplpytorch_mesh(smplpytorch_layers, param), atol=2e-5)
        neutral = smplpytorch_mesh(smplpytorch_layers, dict(param, gender='neutral'))
        assert np.abs(mesh - neutral).max() > 1e-3  # really the gendered layer


def test_crowd_mode_filters_sequences_and_uses_hhrnet(pw3d, synthetic_data_root):
    dataset = pw3d(crowd=True)
    db = load_json(synthetic_data_root, '3DPW_latest_validation.json')
    hhrnet = load_json(synthetic_data_root, '3DPW_validation_crowd_hhrnet_result.json')
    kept = annotations_in_order(db, CROWD)
    assert dataset.data_split == 'validation'
    assert 0 < len(kept) < len(db['annotations'])  # the tree has sequences the filter drops
    assert [d['ann_id'] for d in dataset.datalist] == [ann['id'] for ann, _ in kept]
    with_entry = [i for i, (ann, _) in enumerate(kept) if str(ann['id']) in hhrnet]
    without_entry = [i for i, (ann, _) in enumerate(kept) if str(ann['id']) not in hhrnet]
    assert with_entry and without_entry  # both the HigherHRNet input and the OpenPose fallback occur
    for index, pose in ((with_entry[0], coco19(hhrnet[str(kept[with_entry[0]][0]['id'])])),
                        (without_entry[0], openpose19(kept[without_entry[0]][0]))):
        ann, img = kept[index]
        to_smpl = COCO19_TO_SMPL30 if index == with_entry[0] else OPENPOSE19_TO_SMPL30
        joints, mask, bbox = ref_input(pose, to_smpl, img['width'], img['height'])
        inputs, _, meta = dataset[index]
        np.testing.assert_allclose(inputs['joints'], joints, rtol=1e-4, atol=2e-3)
        np.testing.assert_array_equal(inputs['joints_mask'][:, 0], mask)
        np.testing.assert_allclose(meta['bbox'], bbox, rtol=1e-4, atol=1e-3)


def _link_tree(src_root, dst_root):
    """A writable copy of the synthetic tree: regressors and images symlinked, JSONs copied."""
    for rel in ('J_regressor_extra.npy', 'Human36M/J_regressor_h36m_correct.npy',
                'MSCOCO/J_regressor_coco_hip_smpl.npy'):
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src_root / rel, dst_root / rel)
    data = dst_root / 'PW3D' / 'data'
    data.mkdir(parents=True)
    os.symlink(src_root / 'PW3D' / 'data' / 'imageFiles', data / 'imageFiles')
    for path in (src_root / 'PW3D' / 'data').glob('*.json'):
        shutil.copyfile(path, data / path.name)
    shutil.copytree(src_root / 'PW3D' / 'rootnet_output', dst_root / 'PW3D' / 'rootnet_output')
    return data


def test_unusable_input_pose_falls_back_to_annotation_box(data_cfg, synthetic_data_root, tmp_path):
    """All scores <= 0.05 (the original crashes) or coinciding confident joints -> processed tight box."""
    from data.PW3D.PW3D import PW3D
    data = _link_tree(synthetic_data_root, tmp_path)
    db = load_json(synthetic_data_root, '3DPW_latest_test.json')
    entries = annotations_in_order(db)
    coinciding = [ann['id'] for ann, _ in entries if not has_usable_pose(openpose19(ann))]
    assert len(coinciding) >= 1  # the generator writes a person whose confident joints coincide
    low = next(ann for ann, _ in entries if has_usable_pose(openpose19(ann)))
    for row in low['openpose_result']:
        row[2] = min(row[2], 0.04)
    with open(data / '3DPW_latest_test.json', 'w') as f:
        json.dump(db, f)
    expected = sorted(coinciding + [low['id']])

    cfg.data_dir = str(tmp_path)
    with pytest.warns(UserWarning, match=rf'{len(expected)} of {len(entries)} persons'):
        dataset = PW3D(None, 'test')
    assert sorted(dataset.pose_fallback_aids) == expected
    for aid in expected:
        index = next(i for i, d in enumerate(dataset.datalist) if d['ann_id'] == aid)
        ann, img = entries[index]
        inputs, _, meta = dataset[index]
        # processed tight box in default mode: the box is inside the image, so no clipping shift
        x, y, w, h = ann['bbox']
        x1, y1 = max(0, x), max(0, y)
        w2, h2 = min(img['width'] - 1, x1 + w - 1) - x1, min(img['height'] - 1, y1 + h - 1) - y1
        side = max(w2, h2) * 1.25
        ref = [x1 + w2 / 2 - side / 2, y1 + h2 / 2 - side / 2, side, side]
        np.testing.assert_allclose(meta['bbox'], ref, rtol=1e-4, atol=1e-3)
        centre = np.array([x1 + w2 / 2, y1 + h2 / 2, 1.0])
        np.testing.assert_allclose(meta['img2bb_trans'] @ centre, [128, 128], atol=1e-2)
        assert np.isfinite(inputs['img'].numpy()).all() and float(inputs['img'].std()) > 0.01
        if aid == low['id']:
            assert inputs['joints_mask'].sum() == 0


def test_input_joints_land_on_rendered_person(pw3d, synthetic_data_root):
    """Valid input joints sit on the person's silhouette, and the crop shows a body there."""
    dataset = pw3d()
    entries = annotations_in_order(load_json(synthetic_data_root, '3DPW_latest_test.json'))
    index = next(i for i, (ann, _) in enumerate(entries) if has_usable_pose(openpose19(ann)))
    ann, img = entries[index]
    inputs, targets, meta = dataset[index]
    focal, princpt = np.array(img['cam_param']['focal']), np.array(img['cam_param']['princpt'])
    mesh = targets['smpl_mesh_cam'].astype(np.float64)
    uv = mesh[:, :2] / mesh[:, 2:] * focal + princpt
    crop_uv = uv @ meta['img2bb_trans'][:, :2].T.astype(np.float64) + meta['img2bb_trans'][:, 2]
    silhouette = np.zeros((256, 256), np.uint8)
    faces = dataset.smpl.face
    for triangle in np.round(crop_uv[faces] * 8).astype(np.int32):
        cv2.fillConvexPoly(silhouette, triangle, 1, shift=3)
    near = cv2.dilate(silhouette, np.ones((9, 9), np.uint8))  # detection noise is ~2 px in the image
    joints = inputs['joints'][inputs['joints_mask'][:, 0] > 0, :2] * 4
    cols, rows = np.clip(np.round(joints).astype(int), 0, 255).T
    assert len(joints) >= 8 and near[rows, cols].mean() >= 0.9

    # The renderer shades bodies smoothly while the background is noisy texture: inside the
    # (eroded) silhouette the image must be markedly smoother than outside it.
    crop = inputs['img'].numpy().transpose(1, 2, 0) * 255
    roughness = np.abs(cv2.Laplacian(crop.mean(2).astype(np.float32), cv2.CV_32F))
    inner = cv2.erode(silhouette, np.ones((7, 7), np.uint8)).astype(bool)
    in_image = cv2.erode((crop.max(2) > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    outer = ~cv2.dilate(silhouette, np.ones((15, 15), np.uint8)).astype(bool) & in_image
    assert inner.sum() > 500 and outer.sum() > 500
    assert roughness[inner].mean() < 0.5 * roughness[outer].mean()


# ------------------------------------------------------------------------------- evaluation
def _gt_batch(dataset, indices):
    meshes = np.stack([dataset[i][1]['smpl_mesh_cam'] for i in indices]).astype(np.float64)
    pelvis_row = np.asarray(dataset.smpl.joint_regressor[0], np.float64)
    return meshes, pelvis_row


def _h36m_regressor():
    return np.load(os.path.join(cfg.data_dir, 'Human36M', 'J_regressor_h36m_correct.npy'))


def test_evaluate_zero_for_ground_truth_and_similarity(pw3d):
    dataset = pw3d()
    gt, pelvis_row = _gt_batch(dataset, [0, 1, 2])
    centred = gt - np.einsum('v,bvc->bc', pelvis_row, gt)[:, None]
    per_sample = [{'smpl_mesh_cam': c.astype(np.float32), 'smpl_mesh_cam_target': g.astype(np.float32)}
                  for c, g in zip(centred, gt)]
    result = dataset.evaluate(per_sample, 0)
    assert set(result) >= {'mpjpe', 'pa_mpjpe', 'mpvpe'}
    for key in ('mpjpe', 'pa_mpjpe', 'mpvpe'):
        assert len(result[key]) == 3 and max(result[key]) < 1e-3, key
    assert result['aid'] == [d['ann_id'] for d in dataset.datalist[:3]]

    # A similarity of the prediction leaves PA-MPJPE at 0 (batched tensors as input).
    rot = Rotation.random(3, random_state=1).as_matrix()
    sim = 1.3 * np.einsum('bij,bvj->bvi', rot, centred) + np.array([0.2, -0.1, 0.5])
    batched = {'smpl_mesh_cam': torch.tensor(sim, dtype=torch.float32),
               'smpl_mesh_cam_target': torch.tensor(gt, dtype=torch.float32)}
    result = dataset.evaluate(batched, 0)
    assert max(result['pa_mpjpe']) < 1e-2
    assert min(result['mpjpe']) > 10


def test_evaluate_hand_computed_values(pw3d):
    dataset = pw3d()
    gt, pelvis_row = _gt_batch(dataset, [3, 4])
    h36m = _h36m_regressor()
    centred = gt - np.einsum('v,bvc->bc', pelvis_row, gt)[:, None]
    gt_joints = np.einsum('jv,bvc->bjc', h36m, gt)
    gt_rel = (gt_joints - gt_joints[:, :1])[:, list(H36M_EVAL)]
    # Shifting the prediction changes nothing (pelvis-relative metrics); scaling it about the
    # pelvis by s scales the joint and vertex offsets by s.
    scale = 1.1
    pred = scale * centred + np.array([0.3, 0.0, -0.2])
    result = dataset.evaluate({'smpl_mesh_cam': pred, 'smpl_mesh_cam_target': gt}, 3)
    expected_mpjpe = (scale - 1) * np.linalg.norm(gt_rel, axis=2).mean(1) * 1000
    expected_mpvpe = (scale - 1) * np.linalg.norm(centred, axis=2).mean(1) * 1000
    np.testing.assert_allclose(result['mpjpe'], expected_mpjpe, rtol=1e-6)
    np.testing.assert_allclose(result['mpvpe'], expected_mpvpe, rtol=1e-6)
    np.testing.assert_allclose(result['pa_mpjpe'], 0, atol=1e-6)

    # Moving one side of the body by d moves each H36M joint by d times its regressor weight on
    # that side, and every vertex by d (moved side) minus the pelvis shift.
    d = np.array([0.0, 0.02, 0.0])
    side = centred[..., 0] > 0  # (B, V)
    result = dataset.evaluate({'smpl_mesh_cam': centred + side[..., None] * d, 'smpl_mesh_cam_target': gt}, 3)
    for b in range(2):
        weight = h36m[:, side[b]].sum(1)
        joint_shift = ((weight - weight[0])[:, None] * d)[list(H36M_EVAL)]
        assert result['mpjpe'][b] == pytest.approx(np.linalg.norm(joint_shift, axis=1).mean() * 1000, rel=1e-4)
        moved = side[b][:, None] * d - pelvis_row[side[b]].sum() * d
        assert result['mpvpe'][b] == pytest.approx(np.linalg.norm(moved, axis=1).mean() * 1000, rel=1e-4)
        assert result['mpjpe'][b] > 1


def test_summarize_and_print(pw3d, capsys):
    dataset = pw3d()
    eval_result = {'mpjpe': [10.0, 20.0, 60.0], 'pa_mpjpe': [1.0, 2.0, 3.0], 'mpvpe': [5.0, 5.0, 8.0],
                   'aid': [0, 1, 2], 'sequence': ['b_seq', 'a_seq', 'b_seq']}
    summary = dataset.summarize(eval_result)
    assert summary['mpjpe'] == pytest.approx(30.0) and summary['pa_mpjpe'] == pytest.approx(2.0)
    assert summary['mpvpe'] == pytest.approx(6.0) and summary['num_samples'] == 3
    assert summary['per_sequence']['b_seq'] == {'mpjpe': 35.0, 'pa_mpjpe': 2.0, 'mpvpe': 6.5, 'num_samples': 2}
    assert summary['per_sequence']['a_seq']['mpjpe'] == 20.0
    json.dumps(summary)
    dataset.print_eval_result(eval_result)
    assert capsys.readouterr().out.splitlines() == [
        'MPJPE from mesh: 30.00 mm', 'PA MPJPE from mesh: 2.00 mm', 'MPVPE from mesh: 6.00 mm']


def test_vis_writes_into_the_vis_dir_not_the_working_directory(pw3d, tmp_path, monkeypatch):
    # Outputs holding only the meshes: the OBJs and the pictures that need no network joints
    # (input pose, GT joints) are written; the full set is checked in tests/test_vis.py.
    dataset = pw3d(vis=True, output_dir=str(tmp_path / 'exp'))
    monkeypatch.chdir(tmp_path)
    gt, _ = _gt_batch(dataset, [0])
    dataset.evaluate({'smpl_mesh_cam': gt, 'smpl_mesh_cam_target': gt}, 0)
    annot = dataset.datalist[0]
    prefix = f"{annot['sequence']}_{os.path.splitext(os.path.basename(annot['img_path']))[0]}_{annot['ann_id']}_"
    assert sorted(os.listdir(tmp_path / 'exp' / 'vis')) == sorted(
        prefix + k for k in ('input.jpg', 'gt.jpg', 'final.obj', 'gt.obj'))
    assert list(tmp_path.iterdir()) == [tmp_path / 'exp']


# --------------------------------------------------------------------------- error handling
def test_missing_annotation_file_names_file_and_layout(data_cfg, synthetic_data_root, tmp_path):
    from data.PW3D.PW3D import PW3D
    data = _link_tree(synthetic_data_root, tmp_path)
    cfg.data_dir = str(tmp_path)
    os.remove(data / '3DPW_latest_test.json')
    with pytest.raises(FileNotFoundError, match='3DPW_latest_test.json') as err:
        PW3D(None, 'test')
    assert 'imageFiles' in str(err.value)
    cfg.crowd = True
    os.remove(data / '3DPW_validation_crowd_hhrnet_result.json')
    with pytest.raises(FileNotFoundError, match='3DPW_validation_crowd_hhrnet_result.json'):
        PW3D(None, 'test')


def test_rootnet_mode(data_cfg, synthetic_data_root, tmp_path):
    from data.PW3D.PW3D import PW3D
    _link_tree(synthetic_data_root, tmp_path)
    cfg.data_dir = str(tmp_path)
    cfg.use_gt_info = False
    with pytest.warns(UserWarning):
        dataset = PW3D(None, 'test')
    rootnet = {e['ann_id']: e for e in json.load(open(tmp_path / 'PW3D/rootnet_output/bbox_root_pw3d_output.json'))}
    first = dataset.datalist[0]
    np.testing.assert_allclose(first['bbox'], rootnet[first['ann_id']]['bbox'], rtol=1e-6)
    os.remove(tmp_path / 'PW3D/rootnet_output/bbox_root_pw3d_output.json')
    with pytest.raises(FileNotFoundError, match='bbox_root_pw3d_output.json'):
        PW3D(None, 'test')


def test_unreadable_image_names_the_path(data_cfg, synthetic_data_root, tmp_path):
    from data.PW3D.PW3D import PW3D
    data = _link_tree(synthetic_data_root, tmp_path)
    os.remove(data / 'imageFiles')
    shutil.copytree(synthetic_data_root / 'PW3D' / 'data' / 'imageFiles', data / 'imageFiles')
    cfg.data_dir = str(tmp_path)
    with pytest.warns(UserWarning):
        dataset = PW3D(None, 'test')
    broken = dataset.datalist[0]['img_path']
    with open(broken, 'wb') as f:
        f.write(b'not a jpeg')
    with pytest.raises(IOError, match=os.path.basename(broken)):
        dataset[0]
    os.remove(broken)
    with pytest.raises(FileNotFoundError, match=os.path.basename(broken)):
        dataset[0]
