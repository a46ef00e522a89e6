"""Visual outputs: OBJ files, cameras, multi-person depth ordering, and the 3DPW vis/render outputs."""
import os
import re

import cv2
import numpy as np
import pytest
import torch

from common.utils import vis
from main.config import cfg

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')


# ------------------------------------------------------------------------------ helpers
def parse_obj(path):
    """(vertices (V,3), faces (F,3) 0-based) of an OBJ file; every line must be ``v x y z`` or ``f a b c``."""
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            assert parts[0] in ('v', 'f'), line
            assert len(parts) == 4, line
            if parts[0] == 'v':
                verts.append([float(p) for p in parts[1:]])
            else:
                assert all(re.fullmatch(r'\d+', p) for p in parts[1:]), f'not a plain "f a b c" face: {line}'
                faces.append([int(p) - 1 for p in parts[1:]])
    return np.array(verts), np.array(faces, dtype=np.int64)


def projected_mask(vertices, faces, focal, princpt, shape):
    """(H, W) bool: OpenCV-filled projected triangles (an independent rasterisation)."""
    v = np.asarray(vertices, np.float64)
    uv = np.stack([v[:, 0] / v[:, 2] * focal[0] + princpt[0], v[:, 1] / v[:, 2] * focal[1] + princpt[1]], 1)
    mask = np.zeros(shape, np.uint8)
    shift = 4  # sub-pixel precision of cv2's fill
    for tri in np.asarray(faces):
        pts = np.rint(uv[tri] * (1 << shift)).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def quad(center_px, half_size_px, depth, focal, princpt):
    """A fronto-parallel square (4 vertices, 2 faces) that projects to the given pixel square."""
    cx, cy = center_px
    corners = np.array([[cx - half_size_px, cy - half_size_px], [cx + half_size_px, cy - half_size_px],
                        [cx + half_size_px, cy + half_size_px], [cx - half_size_px, cy + half_size_px]], float)
    x = (corners[:, 0] - princpt[0]) / focal[0] * depth
    y = (corners[:, 1] - princpt[1]) / focal[1] * depth
    return np.stack([x, y, np.full(4, float(depth))], 1)


QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def chroma(rgb):
    rgb = np.asarray(rgb, np.float64)
    return rgb / np.maximum(rgb.sum(axis=-1, keepdims=True), 1e-9)


# ------------------------------------------------------------------------------ files
def test_as_uint8_image_copies_uint8_and_rounds_other_dtypes():
    from common.utils.vis import as_uint8_image
    img = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)[:, ::-1]        # not contiguous
    out = as_uint8_image(img)
    np.testing.assert_array_equal(out, img)
    assert out.flags.c_contiguous and not np.shares_memory(out, img)    # drawing on it leaves img alone
    floats = np.array([-3.2, 0.4, 1.5, 2.5, 254.6, 300.0], np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(as_uint8_image(floats), np.array([0, 0, 2, 2, 255, 255]).reshape(1, 2, 3))


def test_write_obj_plain_faces_one_based(tmp_path):
    verts = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.5], [1.0, 1.0, 2.0]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    path = vis.write_obj(tmp_path / 'sub' / 'm.obj', verts, faces)
    lines = open(path).read().splitlines()
    assert lines[:4] == ['v 0.000000 0.000000 1.000000', 'v 1.000000 0.000000 1.000000',
                         'v 0.000000 1.000000 1.500000', 'v 1.000000 1.000000 2.000000']
    assert lines[4:] == ['f 1 2 3', 'f 2 4 3']
    with pytest.raises(ValueError, match='face indices'):
        vis.write_obj(tmp_path / 'bad.obj', verts, [[0, 1, 4]])


def test_save_image_writes_rgb_and_names_bad_path(tmp_path):
    img = np.zeros((6, 8, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    path = vis.save_image(tmp_path / 'a' / 'x.png', img)
    back = cv2.imread(path)
    assert back.shape == (6, 8, 3) and np.all(back[..., 2] == 200) and np.all(back[..., :2] == 0)
    with pytest.raises(OSError, match='x.unknownext'):
        vis.save_image(tmp_path / 'x.unknownext', img)


def test_person_colors_distinct_and_stable():
    colors = vis.person_colors(6)
    assert colors.shape == (6, 3) and colors.min() >= 0 and colors.max() <= 1
    gaps = np.linalg.norm(colors[:, None] - colors[None], axis=2) + np.eye(6)
    assert gaps.min() > 0.08
    np.testing.assert_array_equal(vis.person_colors(3), colors[:3])


# ------------------------------------------------------------------------------ drawing
def test_draw_skeleton_limbs_need_both_ends_confident():
    img = np.zeros((60, 80, 3), np.uint8)
    joints = np.array([[10.0, 10.0], [50.0, 10.0], [50.0, 50.0]])
    out = vis.draw_skeleton(img, joints, [(0, 1), (1, 2)], scores=[0.9, 0.8, 0.05], score_thr=0.1,
                            color=(255, 0, 0))
    assert out[10, 30].any()           # midpoint of the confident limb 0-1
    assert not out[30, 50].any()       # midpoint of limb 1-2: joint 2 is below the threshold
    assert out[50, 50 + 3].any() or out[50, 50 - 3].any()  # joint 2 still shown (hollow circle)
    assert not img.any()               # input untouched


def test_draw_input_pose_hides_unfilled_channels():
    joints = np.zeros((30, 3))
    joints[16] = [20, 20, 0.9]   # L_Shoulder
    joints[18] = [20, 40, 0.9]   # L_Elbow
    out = vis.draw_input_pose(np.zeros((64, 64, 3), np.uint8), joints, 0.1)
    assert out[30, 20].any()          # the arm limb of INPUT_SKELETON
    assert not out[0:3, 0:3].any()    # the 28 zero-score channels at (0, 0) are not drawn


# ------------------------------------------------------------------------------ cameras
def test_to_shared_camera_keeps_each_projection():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-1, 1, (50, 2)), rng.uniform(2, 9, (50, 1))], 1)
    focal, princpt = np.array([5000.0, 4800.0]), np.array([310.0, 95.0])
    shared_f, shared_c = np.array([4000.0, 4000.0]), np.array([128.0, 240.0])
    out = vis.to_shared_camera(pts, focal, princpt, shared_f, shared_c)
    own = pts[:, :2] / pts[:, 2:] * focal + princpt
    seen = out[:, :2] / out[:, 2:] * shared_f + shared_c
    np.testing.assert_allclose(seen, own, atol=1e-9)
    np.testing.assert_array_equal(out[:, 2], pts[:, 2])


def test_crop_camera_in_image_equals_crop_projection_then_bb2img():
    from common.utils.preprocessing import generate_patch_image
    bbox = np.array([40.0, -20.0, 150.0, 150.0])
    _, _, bb2img = generate_patch_image(np.zeros((300, 200, 3), np.float32), bbox, 1.0, 0.0, False, (256, 256))
    pts = np.array([[0.1, -0.3, 40.0], [-0.5, 0.4, 55.0], [0.0, 0.0, 60.0]])
    crop = pts[:, :2] / pts[:, 2:] * 5000 + 128
    expected = np.concatenate([crop, np.ones((3, 1))], 1) @ bb2img.astype(np.float64).T
    focal, princpt = vis.crop_camera_in_image(bb2img)
    np.testing.assert_allclose(pts[:, :2] / pts[:, 2:] * focal + princpt, expected, atol=1e-3)
    np.testing.assert_allclose(princpt, bbox[:2] + bbox[2:] / 2, atol=1e-3)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_render_people_nearer_person_wins_across_cameras(order):
    # Two people, each with its own camera (principal point at its own box centre, as the
    # render camera), overlapping in the image; the near one's colour must win there.
    shape = (80, 100)
    cams = [((300.0, 300.0), (35.0, 40.0)), ((500.0, 500.0), (60.0, 45.0))]
    near = quad((40, 40), 22, 2.0, *cams[0])
    far = quad((60, 40), 22, 5.0, *cams[1])
    meshes, colors = [near, far], np.array([[0.9, 0.2, 0.2], [0.2, 0.3, 0.9]])
    masks = [projected_mask(m, QUAD_FACES, f, c, shape) for m, (f, c) in zip(meshes, cams)]
    overlap = masks[0] & masks[1]
    assert overlap.sum() > 200
    pick = list(order)
    out, depth, index = vis.render_people(
        np.zeros(shape + (3,), np.uint8), [meshes[i] for i in pick], QUAD_FACES,
        [cams[i][0] for i in pick], [cams[i][1] for i in pick], colors=colors[pick], return_depth=True)
    near_id = pick.index(0)
    inner = cv2.erode(overlap.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.all(index[inner] == near_id)
    np.testing.assert_allclose(depth[inner], 2.0, rtol=1e-5)
    np.testing.assert_allclose(chroma(out[inner]), np.broadcast_to(chroma(colors[0]), (inner.sum(), 3)), atol=0.02)
    # Coverage of each person equals its own camera's projection (edges excepted).
    for k, mask in enumerate(masks):
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.all(index[core] >= 0)
    outside = ~cv2.dilate((masks[0] | masks[1]).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.all(index[outside] == -1) and not out[outside].any()
    far_only = cv2.erode((masks[1] & ~masks[0]).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert far_only.sum() > 50 and np.all(index[far_only] == pick.index(1))


def test_triangles_crossing_the_image_border_cover_only_their_pixels():
    # A triangle sticking out on the right next to a larger one: no pixel outside either
    # triangle may be painted (no wrap-around into the next row, no out-of-range index).
    def unproject(px, z=2.0):
        px = np.asarray(px, float)
        return np.stack([px[:, 0] / 100 * z, px[:, 1] / 100 * z, np.full(len(px), z)], 1)
    tris = [np.array([[6, 1.2], [14, 1.2], [6, 3.3]]), np.array([[0.2, 5.2], [5.3, 5.2], [0.2, 9.6]]),
            np.array([[3.2, 8.2], [12.0, 14.0], [3.2, 13.0]])]   # the last one leaves through the bottom
    verts = np.concatenate([unproject(t) for t in tris])
    faces = np.arange(9).reshape(3, 3)
    expected = np.zeros((10, 10), bool)
    for t in tris:
        contour = t.astype(np.float32).reshape(-1, 1, 2)
        for y in range(10):
            for x in range(10):
                expected[y, x] |= cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0
    _, _, index = vis.render_people(np.zeros((10, 10, 3), np.uint8), [verts], faces, (100.0, 100.0), (0.0, 0.0),
                                    return_depth=True)
    np.testing.assert_array_equal(index >= 0, expected)


# ------------------------------------------------------------------------------ 3DPW vis hook
@pytest.fixture
def make_pw3d(data_cfg, tmp_path):
    """Builds the synthetic 3DPW test set with the given ``vis`` / ``render`` switches (a
    dataset takes its options when it is built)."""
    import warnings
    from data.PW3D.PW3D import PW3D

    def make(vis_on, render_on):
        cfg.output_dir = str(tmp_path / 'exp')
        cfg.vis, cfg.render = vis_on, render_on
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return PW3D(None, 'test')
    return make


def _constructed_output(dataset, idx, render):
    """Test outputs of sample ``idx`` built by hand: the GT-shaped mesh placed in the crop (or
    render) camera so that it lands inside the crop, plus stand-in joints and scores."""
    inputs, targets, meta = dataset[idx]
    gt = targets['smpl_mesh_cam'].astype(np.float64)
    centred = gt - gt.mean(0)
    bbox = meta['bbox'].astype(np.float64)
    depth = 5000 * 1.7 / 120  # about 120 crop pixels tall
    if render:
        depth = depth * 256 / np.sqrt(bbox[2] * bbox[3])  # render mode: camera depth scaled to the box
    mesh = centred + [0.0, 0.0, depth]
    joint_img = np.concatenate([inputs['joints'][:, :2], np.full((30, 1), 32.0)], 1)
    return {'joint_img': joint_img, 'joint_proj': inputs['joints'][:, :2],
            'joint_score': np.linspace(0, 1, 30)[:, None], 'smpl_mesh_cam': centred,
            'mesh_cam_render': mesh, 'smpl_mesh_cam_target': gt, 'bb2img_trans': meta['bb2img_trans'],
            'img2bb_trans': meta['img2bb_trans'], 'bbox': meta['bbox'], 'aid': meta['aid']}


@pytest.mark.parametrize('render', [False, True])
def test_overlay_lands_where_the_camera_projects(make_pw3d, render, tmp_path, monkeypatch):
    from common.utils.preprocessing import load_img
    monkeypatch.chdir(tmp_path)
    pw3d_dataset = make_pw3d(not render, render)
    idx = 1
    out = _constructed_output(pw3d_dataset, idx, render)
    annot = pw3d_dataset.datalist[idx]
    written = pw3d_dataset.visualize_sample(out, annot)
    stem = os.path.splitext(os.path.basename(annot['img_path']))[0]
    prefix = f"{annot['sequence']}_{stem}_{annot['ann_id']}_"
    names = sorted(os.path.basename(p) for p in written)
    if render:   # render alone: only the overlay
        assert names == [prefix + 'render.jpg']
    else:
        assert names == sorted(prefix + k for k in ('render.jpg', 'input.jpg', 'positionnet.jpg', 'final.jpg',
                                                    'gt.jpg', 'final.obj', 'gt.obj'))
    assert all(os.path.dirname(p) == cfg.vis_dir for p in written)
    assert list(tmp_path.iterdir()) == [tmp_path / 'exp']  # nothing in the working directory

    # Independent projection: crop camera (f 5000, c 128) then the crop -> image affine, or
    # in render mode focal 5000 with the principal point at the bbox centre.
    mesh = out['mesh_cam_render']
    bbox = out['bbox'].astype(np.float64)
    uv = mesh[:, :2] / mesh[:, 2:] * 5000
    if render:
        uv = uv + bbox[:2] + bbox[2:] / 2
    else:
        uv = np.concatenate([uv + 128, np.ones((len(uv), 1))], 1) @ out['bb2img_trans'].astype(np.float64).T
    original = load_img(annot['img_path'])
    mask = np.zeros(original.shape[:2], np.uint8)
    for tri in pw3d_dataset.smpl.face:
        cv2.fillConvexPoly(mask, np.rint(uv[tri] * 16).astype(np.int32), 1, shift=4)
    rendered = cv2.cvtColor(cv2.imread(os.path.join(cfg.vis_dir, prefix + 'render.jpg')), cv2.COLOR_BGR2RGB)
    diff = np.abs(rendered.astype(np.float64) - original).sum(2)
    kernel = np.ones((7, 7), np.uint8)
    inside = cv2.erode(mask, kernel).astype(bool)
    outside = ~cv2.dilate(mask, kernel).astype(bool)
    # The bbox frame is drawn outside the mesh; leave its lines out of the comparison.
    frame = vis.draw_bbox(np.zeros_like(rendered), bbox, color=(255, 255, 255)).any(2)
    frame = cv2.dilate(frame.astype(np.uint8), kernel).astype(bool)
    assert inside.sum() > 500
    assert np.mean(diff[inside] > 30) > 0.9
    assert np.mean(diff[outside & ~frame]) < 12
    np.testing.assert_allclose(chroma(rendered[inside]).mean(0), chroma(vis.person_colors(1)[0]), atol=0.03)


@pytest.mark.slow
def test_pw3d_evaluation_writes_vis_files(trained_snapshot, tiny_schedule_yaml, synthetic_smpl_dir, tmp_path,
                                          monkeypatch):
    """``test.py`` with ``vis`` on the trained snapshot: every sample's files, valid images and OBJs."""
    import json
    import yaml
    from smplpytorch.pytorch.smpl_layer import SMPL_Layer
    from tests.helpers import run_in_process
    from main.test import main
    exp = tmp_path / 'exp'
    (exp / 'checkpoint').mkdir(parents=True)
    os.symlink(trained_snapshot / 'checkpoint' / 'snapshot_0.pth.tar', exp / 'checkpoint' / 'snapshot_0.pth.tar')
    values = yaml.safe_load(tiny_schedule_yaml.read_text())
    values.update(vis=True)
    config = tmp_path / 'vis.yaml'
    config.write_text(yaml.safe_dump(values))
    monkeypatch.chdir(tmp_path)
    run_in_process(main, ['--gpu', '0', '--exp_dir', str(exp), '--test_epoch', '0', '--cfg', str(config)])

    from common.options import BodyModelPaths
    from common.utils.smpl import get_smpl
    smpl = get_smpl(BodyModelPaths(values['smpl_model_dir'], values['data_dir']))
    with open(os.path.join(values['data_dir'], 'PW3D', 'data', '3DPW_latest_test.json')) as f:
        db = json.load(f)
    images = {img['id']: img for img in db['images']}
    layers = {g: SMPL_Layer(gender=g, model_root=str(synthetic_smpl_dir)) for g in ('male', 'female')}
    vis_dir = exp / 'vis'
    expected = set()
    for ann in db['annotations']:
        img = images[ann['image_id']]
        prefix = f"{img['sequence']}_{os.path.splitext(img['file_name'])[0]}_{ann['id']}_"
        kinds = ('input.jpg', 'positionnet.jpg', 'final.jpg', 'gt.jpg', 'render.jpg', 'final.obj', 'gt.obj')
        expected |= {prefix + k for k in kinds}
        for kind in kinds[:5]:
            picture = cv2.imread(str(vis_dir / (prefix + kind)))
            assert picture is not None and picture.shape == (img['height'], img['width'], 3), prefix + kind
        faces = smpl.face
        for kind in ('final.obj', 'gt.obj'):
            verts, obj_faces = parse_obj(vis_dir / (prefix + kind))
            assert verts.shape == (6890, 3)
            np.testing.assert_array_equal(obj_faces, faces)
        # The GT mesh: smplpytorch's gendered mesh, centred at its SMPL-30 pelvis.
        p = ann['smpl_param']
        with torch.no_grad():
            gt, _ = layers[p['gender']](torch.tensor([p['pose']], dtype=torch.float32),
                                        torch.tensor([p['shape']], dtype=torch.float32),
                                        torch.tensor([p['trans']], dtype=torch.float32))
        gt = gt[0].double().numpy()
        gt = gt - smpl.joint_regressor[0].astype(np.float64) @ gt
        np.testing.assert_allclose(parse_obj(vis_dir / (prefix + 'gt.obj'))[0], gt, atol=2e-5)
        # The prediction is root-relative: its SMPL-30 pelvis sits at the origin.
        pred = parse_obj(vis_dir / (prefix + 'final.obj'))[0]
        np.testing.assert_allclose(smpl.joint_regressor[0].astype(np.float64) @ pred, 0, atol=1e-5)
    assert set(os.listdir(vis_dir)) == expected
    assert sorted(os.listdir(tmp_path)) == ['exp', 'vis.yaml']


def test_pictures_and_meshes_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A writer that dies half-way leaves the previous picture / mesh byte-identical and no
    temporary file behind."""
    from common.utils import files
    picture, mesh = tmp_path / 'a.jpg', tmp_path / 'a.obj'
    vis.save_image(picture, np.full((8, 8, 3), 200, np.uint8))
    vis.write_obj(mesh, np.zeros((3, 3)), np.array([[0, 1, 2]]))
    before = {path: path.read_bytes() for path in (picture, mesh)}
    real_open = open

    def dying_open(path, mode='r', *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if 'w' in mode and '.tmp-' in str(path):
            handle.write(b'partial' if 'b' in mode else 'partial')
            handle.close()
            raise OSError(28, 'No space left on device')
        return handle

    monkeypatch.setattr(files, 'open', dying_open, raising=False)
    with pytest.raises(files.FileWriteError, match='a.jpg'):
        vis.save_image(picture, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(files.FileWriteError, match='a.obj'):
        vis.write_obj(mesh, np.ones((3, 3)), np.array([[0, 1, 2]]))
    assert {path: path.read_bytes() for path in (picture, mesh)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.jpg', 'a.obj']
