"""The synthetic data tree (tool/make_synthetic_data.py): format constraints, determinism, helpers."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from main.config import ROOT_DIR, cfg

H36M_SUBJECTS = {'train': (1, 5, 6, 7, 8), 'test': (9, 11)}
CROWD = ('courtyard_hug_00', 'courtyard_dancing_00')


def read(path):
    with open(path) as f:
        return json.load(f)


def check_coco_style(path):
    """COCO-style files: images/annotations lists, unique ids, valid image_id, category_id if categories exist."""
    content = read(path)
    assert isinstance(content['images'], list) and isinstance(content['annotations'], list), path
    image_ids = [img['id'] for img in content['images']]
    ann_ids = [ann['id'] for ann in content['annotations']]
    assert len(set(image_ids)) == len(image_ids) and len(set(ann_ids)) == len(ann_ids), path
    assert {ann['image_id'] for ann in content['annotations']} <= set(image_ids), path
    if 'categories' in content:
        assert all('category_id' in ann for ann in content['annotations']), path
    from pycocotools.coco import COCO
    import contextlib
    import io
    db = COCO()
    db.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):
        db.createIndex()
    return content


def check_image(path, width, height):
    img = cv2.imread(str(path))
    assert img is not None, f'{path} is missing or not decodable'
    assert img.shape == (height, width, 3), path
    assert img.std() > 5, f'{path} looks blank'


def sanitised_area(bbox, width, height):
    """w * h of the box after sanitising (0 when it would be dropped)."""
    x, y, w, h = bbox
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
    return (x2 - x1) * (y2 - y1) if w * h > 0 and x2 >= x1 and y2 >= y1 else 0.0


# ------------------------------------------------------------------ format constraints
def test_regressors_copied_into_place(synthetic_data_root, synthetic_smpl_dir):
    for name, dest, rows in (('J_regressor_extra.npy', 'J_regressor_extra.npy', None),
                             ('J_regressor_h36m_correct.npy', 'Human36M/J_regressor_h36m_correct.npy', 17),
                             ('J_regressor_coco_hip_smpl.npy', 'MSCOCO/J_regressor_coco_hip_smpl.npy', 17)):
        copied = np.load(synthetic_data_root / dest)
        np.testing.assert_array_equal(copied, np.load(synthetic_smpl_dir / name))
        assert copied.shape[1] == 6890 and (copied.shape[0] == rows if rows else copied.shape[0] >= 4)


def test_human36m_constraints(synthetic_data_root):
    ann_dir = synthetic_data_root / 'Human36M' / 'annotations'
    keys, kept = None, {'train': 0, 'test': 0}
    for split, subjects in H36M_SUBJECTS.items():
        for subject in subjects:
            files = {kind: ann_dir / f'Human36M_subject{subject}_{kind}.json'
                     for kind in ('data', 'camera', 'joint_3d', 'smpl_param')}
            assert all(path.is_file() for path in files.values()), subject
            data = read(files['data'])
            assert all(isinstance(v, list) for v in data.values())
            if data.get('images'):
                keys = keys or set(data)
                assert set(data) == keys
                check_coco_style(files['data'])
            cameras, joints, fits = (read(files[k]) for k in ('camera', 'joint_3d', 'smpl_param'))
            for img in data.get('images', []):
                assert img['subject'] == subject
                a, s, f = str(img['action_idx']), str(img['subaction_idx']), str(img['frame_idx'])
                has_fit = f in fits.get(a, {}).get(s, {})
                if split == 'train':
                    keep = img['frame_idx'] % 5 == 0
                else:
                    keep = img['frame_idx'] % 64 == 0 and has_fit
                if not keep:
                    continue
                camera = cameras[str(img['cam_idx'])]
                assert np.shape(camera['R']) == (3, 3) and np.shape(camera['t']) == (3,)
                assert np.shape(camera['f']) == (2,) and np.shape(camera['c']) == (2,)
                if split == 'test' and img['cam_idx'] != 4:
                    continue
                assert np.shape(joints[a][s][f]) == (17, 3)
                if has_fit:
                    fit = fits[a][s][f]
                    assert (len(fit['pose']), len(fit['shape']), len(fit['trans'])) == (72, 10, 3)
                check_image(synthetic_data_root / 'Human36M' / 'images' / img['file_name'], img['width'], img['height'])
                kept[split] += 1
    assert kept['train'] > 0 and kept['test'] > 0


def test_muco_constraints(synthetic_data_root):
    content = check_coco_style(synthetic_data_root / 'MuCo' / 'data' / 'MuCo-3DHP.json')
    fits = read(synthetic_data_root / 'MuCo' / 'data' / 'smpl_param.json')
    per_image = {}
    for ann in content['annotations']:
        per_image[ann['image_id']] = per_image.get(ann['image_id'], 0) + 1
        cam = np.asarray(ann['keypoints_cam'])
        assert cam.shape == (21, 3) and (cam[:, 2] > 0).all()
        assert np.shape(ann['keypoints_img']) == (21, 2)
    assert all(per_image.get(img['id'], 0) >= 1 for img in content['images'])
    assert max(per_image.values()) >= 2  # several people per image
    assert set(fits) <= {str(ann['id']) for ann in content['annotations']} and fits
    for img in content['images']:
        assert np.shape(img['f']) == (2,) and np.shape(img['c']) == (2,)
        check_image(synthetic_data_root / 'MuCo' / 'data' / img['file_name'], img['width'], img['height'])


@pytest.mark.parametrize('dataset', ['MSCOCO', 'MPII'])
def test_2d_dataset_constraints(synthetic_data_root, dataset):
    if dataset == 'MSCOCO':
        ann_path = synthetic_data_root / 'MSCOCO' / 'annotations' / 'person_keypoints_train2017.json'
        fit_path = synthetic_data_root / 'MSCOCO' / 'annotations' / 'MSCOCO_train_SMPL_NeuralAnnot.json'
        img_dir, num_kps = synthetic_data_root / 'MSCOCO' / 'images' / 'train2017', 17
    else:
        ann_path = synthetic_data_root / 'MPII' / 'data' / 'annotations' / 'train.json'
        fit_path = synthetic_data_root / 'MPII' / 'data' / 'annotations' / 'MPII_train_SMPL_NeuralAnnot.json'
        img_dir, num_kps = synthetic_data_root / 'MPII' / 'data', 16
    content = check_coco_style(ann_path)
    fits = read(fit_path)
    images = {img['id']: img for img in content['images']}
    kept = 0
    for ann in content['annotations']:
        assert len(ann['keypoints']) == 3 * num_kps
        if dataset == 'MSCOCO':
            assert 'iscrowd' in ann and 'num_keypoints' in ann
            if ann['iscrowd'] or ann['num_keypoints'] == 0:
                continue
        img = images[ann['image_id']]
        if sanitised_area(ann['bbox'], img['width'], img['height']) > 0:
            kept += 1
            check_image(img_dir / img['file_name'], img['width'], img['height'])
    assert kept > 0
    for entry in fits.values():
        assert len(entry['smpl_param']['pose']) == 72 and len(entry['cam_param']['focal']) == 2


def test_pw3d_constraints(synthetic_data_root):
    data_dir = synthetic_data_root / 'PW3D' / 'data'
    for split in ('test', 'validation', 'train'):
        content = check_coco_style(data_dir / f'3DPW_latest_{split}.json')
        images = {img['id']: img for img in content['images']}
        people = {}
        for ann in content['annotations']:
            img = images[ann['image_id']]
            people[img['id']] = people.get(img['id'], 0) + 1
            openpose = np.asarray(ann['openpose_result'])
            assert openpose.shape == (18, 3) and (openpose[:, 2] > 0.05).any()
            assert ann['smpl_param']['gender'] in ('male', 'female')
            assert (len(ann['smpl_param']['pose']), len(ann['smpl_param']['shape'])) == (72, 10)
            assert ann['smpl_param']['trans'][2] > 0
            joint_img = np.asarray(ann['joint_img'])
            assert joint_img.shape == (24, 2)
            assert (joint_img >= 0).all() and (joint_img[:, 0] < img['width']).all() \
                and (joint_img[:, 1] < img['height']).all()
            assert sanitised_area(ann['bbox'], img['width'], img['height']) > 0
        for img in content['images']:
            assert set(img['cam_param']) >= {'focal', 'princpt'}
            for value in img['cam_param'].values():
                np.asarray(value, dtype=np.float32)  # every entry must be numeric
            check_image(data_dir / 'imageFiles' / img['sequence'] / img['file_name'], img['width'], img['height'])
        assert max(people.values()) >= (1 if split == 'train' else 2)
        if split == 'validation':
            sequences = {img['sequence'] for img in content['images']}
            assert set(CROWD) <= sequences and sequences - set(CROWD)
            crowd_ids = {str(ann['id']) for ann in content['annotations']
                         if images[ann['image_id']]['sequence'] in CROWD}
    hhrnet = read(data_dir / '3DPW_validation_crowd_hhrnet_result.json')
    assert all(np.shape(entry['coco_joints']) == (17, 3) for entry in hhrnet.values())
    assert crowd_ids - set(hhrnet) and crowd_ids & set(hhrnet)  # some crowd annotations fall back
    rootnet = read(synthetic_data_root / 'PW3D' / 'rootnet_output' / 'bbox_root_pw3d_output.json')
    assert all(len(entry['bbox']) == 4 and len(entry['root_cam']) == 3 for entry in rootnet)


def test_pw3d_images_show_the_annotated_people(synthetic_data_root):
    """The projected SMPL joints of every person land on rendered body pixels, not background."""
    data_dir = synthetic_data_root / 'PW3D' / 'data'
    content = read(data_dir / '3DPW_latest_test.json')
    images = {img['id']: img for img in content['images']}
    for img in content['images'][:2]:
        picture = cv2.imread(str(data_dir / 'imageFiles' / img['sequence'] / img['file_name'])).astype(np.float32)
        roughness = np.abs(cv2.Laplacian(picture.mean(2), cv2.CV_32F))
        smooth = cv2.blur(roughness, (5, 5))
        on_joints, background = [], np.median(smooth)
        for ann in content['annotations']:
            if images[ann['image_id']] is img:
                # torso joints are well inside the body: pelvis, spine1-3
                for u, v in np.asarray(ann['joint_img'])[[0, 3, 6, 9]]:
                    on_joints.append(smooth[int(round(v)), int(round(u))])
        assert np.median(on_joints) < 0.5 * background


# ---------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_gives_byte_identical_files(synthetic_data_root, synthetic_smpl_dir, tmp_path):
    """The CLI with the same seed reproduces the shared fixture tree's 3DPW files byte for byte."""
    out = tmp_path / 'again'
    subprocess.run([sys.executable, str(ROOT_DIR / 'tool' / 'make_synthetic_data.py'), '--root', str(out),
                    '--smpl', str(synthetic_smpl_dir), '--seed', '0', '--datasets', 'PW3D'],
                   check=True, capture_output=True, cwd=str(tmp_path))
    reference = sorted(p.relative_to(synthetic_data_root) for p in (synthetic_data_root / 'PW3D').rglob('*')
                       if p.is_file())
    assert reference and sorted(p.relative_to(out) for p in (out / 'PW3D').rglob('*') if p.is_file()) == reference
    for rel in reference:
        assert (out / rel).read_bytes() == (synthetic_data_root / rel).read_bytes(), rel


@pytest.mark.slow
def test_other_seed_gives_other_annotations(synthetic_data_root, synthetic_smpl_dir, tmp_path, monkeypatch):
    """A different seed changes the annotations (images skipped to stay fast)."""
    from tool.synthetic.tree import make_synthetic_data
    from tool.synthetic import common
    monkeypatch.setattr(common, 'write_jpeg', lambda path, img: None)
    monkeypatch.setattr(common, 'render_people', lambda w, h, meshes, faces, f, c, rng: None)
    make_synthetic_data(tmp_path, synthetic_smpl_dir, seed=1, datasets=('PW3D',))
    name = 'PW3D/data/3DPW_latest_test.json'
    assert (tmp_path / name).read_bytes() != (synthetic_data_root / name).read_bytes()


def test_generator_errors(synthetic_smpl_dir, tmp_path):
    from tool.synthetic.tree import make_synthetic_data
    with pytest.raises(ValueError, match='unknown dataset'):
        make_synthetic_data(tmp_path / 'x', synthetic_smpl_dir, datasets=('PW3D', 'CrowdPose'))
    with pytest.raises(FileNotFoundError, match='J_regressor_extra.npy'):
        make_synthetic_data(tmp_path / 'y', tmp_path, datasets=('PW3D',))


# ---------------------------------------------------------------------------- helpers
def test_common_helpers_pose_camera_and_placement(smpl_cfg):
    from common.utils.smpl import get_smpl
    from common.utils.transforms import cam2pixel
    from tool.synthetic import common
    rng = np.random.default_rng(3)
    smpl = get_smpl(cfg.body_model_paths())
    pose, betas = common.random_pose(rng), common.random_betas(rng)
    assert pose.shape == (72,) and betas.shape == (10,) and np.abs(betas).max() <= 1
    verts, joints = common.smpl_forward(smpl, pose[None], betas[None], gender='female')
    head, pelvis, l_ankle = joints[0, 15], joints[0, 0], joints[0, 7]
    assert head[1] < pelvis[1] < l_ankle[1]  # upright in an OpenCV camera (y down)
    width, height = 200, 300
    focal, princpt = common.random_camera(rng, width, height)
    trans = common.place_person(verts[0], focal, princpt, width, height, rng)
    uv = common.project(verts[0] + trans, focal, princpt)
    np.testing.assert_allclose(uv, cam2pixel(verts[0] + trans, focal, princpt)[:, :2], rtol=1e-6)
    assert (uv >= 0).all() and (uv[:, 0] < width).all() and (uv[:, 1] < height).all()
    extent = uv[:, 1].max() - uv[:, 1].min()
    assert 0.4 * height < extent < 0.8 * height
    # Same rng state -> same draws.
    assert np.array_equal(common.random_pose(np.random.default_rng(7)), common.random_pose(np.random.default_rng(7)))


def test_render_people_and_io(smpl_cfg, tmp_path):
    from common.utils.smpl import get_smpl
    from tool.synthetic import common
    smpl = get_smpl(cfg.body_model_paths())
    rng = np.random.default_rng(0)
    verts, _ = common.smpl_forward(smpl, common.random_pose(rng)[None], np.zeros((1, 10)))
    focal, princpt = np.array([300.0, 300.0]), np.array([80.0, 60.0])
    trans = common.place_person(verts[0], focal, princpt, 160, 120, rng)
    img = common.render_people(160, 120, [verts[0] + trans], smpl.face, focal, princpt, np.random.default_rng(1))
    background = common.render_people(160, 120, [], smpl.face, focal, princpt, np.random.default_rng(1))
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    changed = np.abs(img.astype(int) - background.astype(int)).sum(2) > 0
    near_changed = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    uv = common.project(verts[0] + trans, focal, princpt)
    inside = near_changed[np.clip(uv[:, 1].round().astype(int), 0, 119), np.clip(uv[:, 0].round().astype(int), 0, 159)]
    assert inside.mean() > 0.9 and 0.02 < changed.mean() < 0.6
    common.write_jpeg(tmp_path / 'sub' / 'a.jpg', img)
    back = cv2.imread(str(tmp_path / 'sub' / 'a.jpg'))[:, :, ::-1]
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 12
    orange = np.zeros((16, 16, 3), np.uint8)
    orange[..., 0], orange[..., 1] = 230, 120  # RGB
    common.write_jpeg(tmp_path / 'orange.jpg', orange)
    np.testing.assert_allclose(cv2.imread(str(tmp_path / 'orange.jpg'))[8, 8], [0, 120, 230], atol=4)  # BGR
    common.write_json(tmp_path / 'a.json', {'x': np.arange(3, dtype=np.float32) / 3, 'n': np.int64(2)})
    assert read(tmp_path / 'a.json') == {'x': [0.0, 0.333333, 0.666667], 'n': 2}


# ------------------------------------------------------------------ real resolutions (--full-size)
FULL_SIZES = {  # (JSON with an 'images' list, image folder relative to root) -> expected (width, height) set
    ('PW3D/data/3DPW_latest_test.json', None): {(1080, 1920), (1920, 1080)},
    ('Human36M/annotations/Human36M_subject1_data.json', 'Human36M/images'): {(1000, 1002)},
    ('MuCo/data/MuCo-3DHP.json', 'MuCo/data'): {(2048, 2048)},
    ('MSCOCO/annotations/person_keypoints_train2017.json', 'MSCOCO/images/train2017'):
        {(640, 480), (480, 640), (640, 427), (427, 640)},
    ('MPII/data/annotations/train.json', 'MPII/data'): {(1280, 720), (1920, 1080)},
}


def image_path(root, folder, image):
    if folder is None:   # 3DPW: imageFiles/<sequence>/<file>
        return root / 'PW3D' / 'data' / 'imageFiles' / image['sequence'] / image['file_name']
    return root / folder / image['file_name']


@pytest.mark.slow
def test_full_size_tree_has_real_resolutions_and_matching_annotations(full_size_data_root):
    root = full_size_data_root
    for (json_path, folder), sizes in FULL_SIZES.items():
        content = read(root / json_path)
        assert {(img['width'], img['height']) for img in content['images']} == sizes, json_path
        images = {img['id']: img for img in content['images']}
        for img in content['images']:
            path = image_path(root, folder, img)
            if path.exists():   # Human3.6M renders only the images a loader reads
                check_image(path, img['width'], img['height'])
        for ann in content['annotations']:
            if ann.get('num_keypoints', 1) == 0:   # COCO's fixed-size unlabelled person, dropped by the loader
                continue
            img = images[ann['image_id']]
            x, y, w, h = ann['bbox']
            # Boxes cover people inside the image (a pixel of slack at the edges; 3DPW's enlarged
            # annotation boxes may stick out by a tenth of their size).
            slack_x, slack_y = 0.1 * w + 1, 0.1 * h + 1
            assert -slack_x <= x and x + w <= img['width'] + slack_x, (json_path, ann['id'])
            assert -slack_y <= y and y + h <= img['height'] + slack_y, (json_path, ann['id'])
            assert w * h == 0 or w * h > 0.002 * img['width'] * img['height'], (json_path, ann['id'])
    # 3DPW: the projected joints land inside each person's box, through the stored camera.
    pw3d = read(root / 'PW3D/data/3DPW_latest_test.json')
    images = {img['id']: img for img in pw3d['images']}
    for ann in pw3d['annotations']:
        cam = images[ann['image_id']]['cam_param']
        joints = np.asarray(ann['joint_cam'])
        uv = joints[:, :2] / joints[:, 2:] * np.asarray(cam['focal']) + np.asarray(cam['princpt'])
        np.testing.assert_allclose(uv, np.asarray(ann['joint_img'])[:, :2], atol=1e-3)
        x, y, w, h = ann['bbox']
        assert np.all((uv[:, 0] >= x) & (uv[:, 0] <= x + w) & (uv[:, 1] >= y) & (uv[:, 1] <= y + h))
