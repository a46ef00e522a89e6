"""The demo: pose files, 3DCrowdNet's person-selection rules, network inputs, and the CLI end to end.

The library is ``common/demo.py``; ``main/demo.py`` is its command line and
``tool/quickstart.py`` runs it on the synthetic data.
"""
import ast
import json
import os

import cv2
import numpy as np
import pytest
import torch

from common.options import GeometryOptions
from main.config import cfg
from tests.reference import ref_square_box

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2,
                           camera_3d_size=2.5, focal=(5000, 5000), sigma=2.5)

# Written out by hand from the layouts' joint orders: source index k -> SMPL-30 index (-1: dropped).
OPENPOSE18_TO_SMPL30 = (24, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 26, 25, 28, 27)
BODY25_TO_SMPL30 = (24, 12, 17, 19, 21, 16, 18, 20, -1, 2, 5, 8, 1, 4, 7, 26, 25, 28, 27, -1, -1, -1, -1, -1, -1)
COCO17_TO_SMPL30 = (24, 25, 26, 27, 28, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8)
OPENPOSE18_TO_COCO17 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)  # COCO-17 k <- OpenPose-18
L_HIP, R_HIP, L_SHOULDER, R_SHOULDER, PELVIS, NECK = 1, 2, 16, 17, 0, 12


# ------------------------------------------------------------------------------ references
def ref_smpl30(joints, to_smpl30, has_neck):
    """(30, 3) in SMPL-30 order with pelvis (and, without a detected neck, the neck) as midpoints,
    their scores the product of both ends' scores."""
    out = np.zeros((30, 3))
    for k, m in enumerate(to_smpl30):
        if m >= 0:
            out[m] = joints[k]
    for new, (a, b) in ((PELVIS, (L_HIP, R_HIP)), (NECK, (L_SHOULDER, R_SHOULDER))):
        if new == NECK and has_neck:
            continue
        out[new] = [(out[a, 0] + out[b, 0]) / 2, (out[a, 1] + out[b, 1]) / 2, out[a, 2] * out[b, 2]]
    return out


def ref_bbox(joints, width, height):
    """Box around the joints with score > 0.1 (extent x1.2), then the default sanitiser, square, x1.25."""
    valid = joints[:, 2] > 0.1
    xs, ys = joints[valid, 0], joints[valid, 1]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    w, h = (xs.max() - xs.min()) * 1.2, (ys.max() - ys.min()) * 1.2
    return ref_square_box([cx - w / 2, cy - h / 2, w, h], width, height)


def person(center, height_px, rng, score=0.9):
    """A COCO-17 pose (17, 3) of a standing person around ``center``."""
    # Normalised (x, y) of nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
    layout = np.array([[0, -.42], [-.03, -.45], [.03, -.45], [-.06, -.43], [.06, -.43], [-.12, -.3], [.12, -.3],
                       [-.15, -.12], [.15, -.12], [-.16, .05], [.16, .05], [-.08, .05], [.08, .05], [-.08, .27],
                       [.08, .27], [-.08, .5], [.08, .5]])
    xy = np.asarray(center) + layout * height_px + rng.normal(0, 1.0, (17, 2))
    return np.concatenate([xy, np.full((17, 1), score)], 1)


def write_json(path, data):
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(path)


# ------------------------------------------------------------------------------ pose files
def test_openpose_layouts_map_by_name(tmp_path):
    from common.demo import read_pose_file, to_smpl30
    rng = np.random.default_rng(0)
    body25 = np.concatenate([rng.uniform(0, 300, (25, 2)), rng.uniform(0, 1, (25, 1))], 1)
    coco18 = np.concatenate([rng.uniform(0, 300, (18, 2)), rng.uniform(0, 1, (18, 1))], 1)
    coco18[11] = 0  # an undetected left hip: the pelvis score becomes 0
    path = write_json(tmp_path / 'op.json', {'version': 1.3, 'people': [
        {'pose_keypoints_2d': body25.reshape(-1).tolist()}, {'pose_keypoints_2d': coco18.reshape(-1).tolist()}]})
    dets = read_pose_file(path)
    assert [d.layout for d in dets] == ['openpose-body25', 'openpose-coco18']
    np.testing.assert_allclose(to_smpl30(dets[0]), ref_smpl30(body25, BODY25_TO_SMPL30, True), atol=1e-4)
    np.testing.assert_allclose(to_smpl30(dets[1]), ref_smpl30(coco18, OPENPOSE18_TO_SMPL30, True),
                               atol=1e-4)
    assert to_smpl30(dets[1])[PELVIS, 2] == 0


def test_coco_results_pick_the_image(tmp_path):
    from common.demo import PoseFileError, read_pose_file, to_smpl30
    rng = np.random.default_rng(1)
    poses = [person((100 + 50 * i, 100), 120, rng) for i in range(3)]
    entries = [{'image_id': iid, 'category_id': 1, 'keypoints': p.reshape(-1).tolist(), 'score': 0.9}
               for iid, p in zip((785, 785, 42), poses)]
    path = write_json(tmp_path / 'res.json', entries)
    by_name = read_pose_file(path, img_path=str(tmp_path / '000000000785.jpg'))
    assert [d.index for d in by_name] == [0, 1]
    np.testing.assert_allclose(to_smpl30(by_name[1]), ref_smpl30(poses[1], COCO17_TO_SMPL30, False),
                               atol=1e-4)
    assert [d.index for d in read_pose_file(path, img_path='x.jpg', image_id='42')] == [2]
    with pytest.raises(PoseFileError, match='--image_id'):
        read_pose_file(path, img_path=str(tmp_path / 'other.jpg'))


def test_zero_padded_and_integer_ids_are_one_image_for_one_picture_and_for_many(tmp_path):
    """'000785' and 785 both name 785.jpg, whether the file is read for that one image (by its
    name or by --image_id) or as the results of a folder of pictures."""
    from common.demo import read_pose_file
    from common.demo_inputs import Frame
    from common.demo_poses import pose_source
    rng = np.random.default_rng(3)
    entries = [{'image_id': iid, 'keypoints': person((60 + 40 * i, 80), 100, rng).reshape(-1).tolist(),
                'score': 0.9} for i, iid in enumerate(('000785', 785, 42))]
    path = write_json(tmp_path / 'res.json', entries)
    picture = str(tmp_path / '785.jpg')
    assert [d.index for d in read_pose_file(path, img_path=picture)] == [0, 1]
    assert [d.index for d in read_pose_file(path, img_path='x.jpg', image_id='785')] == [0, 1]
    assert [d.index for d in read_pose_file(path, img_path='x.jpg', image_id='0785')] == [0, 1]
    many = pose_source(path, 'folder', str(tmp_path))
    assert [d.index for d in many.detections(Frame('785', None, picture))] == [0, 1]
    assert [d.index for d in many.detections(Frame('000042', None, picture))] == [2]


@pytest.mark.parametrize('content, message', [
    ('{"people": [{"pose_keypoints_2d": [1, 2', 'not valid JSON'),
    ('{"animals": []}', 'no supported format'),
    ('{"people": [{"face_keypoints_2d": []}]}', "no 'pose_keypoints_2d'"),
    ('{"people": [{"pose_keypoints_2d": [1, 2, 3, 4]}]}', 'has 4 numbers'),
    ('{"people": [{"pose_keypoints_2d": ["a", "b", "c"]}]}', 'flat list of numbers'),
    ('[{"image_id": 1, "keypoints": [1, 2, 3], "score": 1}]', 'has 3 numbers'),
])
def test_malformed_pose_files_are_named(tmp_path, content, message):
    from common.demo import PoseFileError, read_pose_file
    path = tmp_path / 'poses.json'
    path.write_text(content)
    with pytest.raises(PoseFileError, match=message) as info:
        read_pose_file(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------ selection and inputs
def test_pelvis_and_neck_are_averaged_in_the_pose_files_precision():
    """The midpoints come from the file's float64 values, rounded to float32 once."""
    from common.demo import Detection, to_smpl30
    from common.utils.joints import COCO17
    rng = np.random.default_rng(5)
    pose = np.round(np.concatenate([rng.uniform(0, 900, (17, 2)), rng.uniform(0, 1, (17, 1))], 1), 3)
    smpl30 = to_smpl30(Detection(0, pose, COCO17.names, 'coco17'))
    for new, (a, b) in ((PELVIS, (11, 12)), (NECK, (5, 6))):       # COCO-17 hips, shoulders
        expected = np.float32([(pose[a, 0] + pose[b, 0]) / 2, (pose[a, 1] + pose[b, 1]) / 2, pose[a, 2] * pose[b, 2]])
        np.testing.assert_array_equal(smpl30[new], expected)
    assert smpl30.dtype == np.float32


def test_selection_rules():
    from common.demo import Detection, select_people
    from common.utils.joints import COCO17
    rng = np.random.default_rng(2)
    width, height = 640, 480
    a = person((200, 240), 300, rng)
    duplicate = a.copy()
    duplicate[:, :2] += 8.0                                   # mean |difference| 8 px < 20
    weak = person((450, 240), 300, rng, score=0.05)           # score sum 0.05*17 + pelvis/neck < 1
    b = person((470, 250), 280, rng)
    upper_only = person((330, 240), 300, rng)                 # confident joints only on the upper body...
    upper_only[11:, 2] = 0.0
    lower_only = person((320, 260), 300, rng)                 # ...and only on the legs: nothing in common
    lower_only[:11, 2] = 0.0
    poses = [a, duplicate, weak, b, upper_only, lower_only]
    dets = [Detection(i, p, COCO17.names, 'coco17') for i, p in enumerate(poses)]
    accepted, skipped = select_people(dets, width, height, GEOMETRY)
    reasons = {s['index']: s['reason'] for s in skipped}
    assert [p.index for p in accepted] == [0, 3, 4]
    assert sorted(reasons) == [1, 2, 5]
    assert 'duplicate of input person 0 (mean joint difference 8.0 px' in reasons[1]
    assert 'too few confident joints' in reasons[2]
    # 3DCrowdNet's rule: sharing no confident joint with an accepted person counts as a duplicate.
    assert 'duplicate of input person 4 (no confident joint in common)' in reasons[5]
    for p in accepted:
        ref = ref_smpl30(poses[p.index], COCO17_TO_SMPL30, False)
        np.testing.assert_allclose(p.joints_img, ref, atol=1e-4)
        np.testing.assert_allclose(p.bbox, ref_bbox(ref, width, height), atol=1e-3)


def test_person_inputs_follow_the_crop():
    from common.demo import Person, person_inputs
    from common.utils.joints import SMPL30
    rng = np.random.default_rng(3)
    joints = ref_smpl30(person((150, 130), 180, rng), COCO17_TO_SMPL30, False)
    joints[20, 2] = 0.05                      # below 0.1: masked
    joints[21, :2] = [-300, 130]              # far outside the crop: truncated
    bbox = ref_bbox(joints, 320, 240)
    img = rng.uniform(0, 255, (240, 320, 3)).astype(np.float32)
    inputs = person_inputs(img, Person(0, joints.astype(np.float32), bbox.astype(np.float32)), GEOMETRY)
    centre = bbox[:2] + bbox[2:] / 2
    expected_hm = ((joints[:, :2] - centre) * 256 / bbox[2:] + 128) / 4
    np.testing.assert_allclose(inputs['joints'][:, :2], expected_hm, atol=1e-3)
    np.testing.assert_allclose(inputs['joints'][:, 2], joints[:, 2], atol=1e-6)
    inside = (expected_hm >= 0).all(1) & (expected_hm < 64).all(1)
    np.testing.assert_array_equal(inputs['joints_mask'][:, 0], ((joints[:, 2] > 0.1) & inside).astype(np.float32))
    assert inputs['joints_mask'][20, 0] == 0 and inputs['joints_mask'][21, 0] == 0
    # A COCO-17 pose fills its 17 joints plus the pelvis and neck midpoints; of those, the
    # low-score left wrist and the right wrist outside the crop are masked.
    filled = {'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow',
              'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle', 'Pelvis', 'Neck'}
    assert {SMPL30.names[i] for i in np.nonzero(inputs['joints'][:, 2])[0]} == filled
    assert {SMPL30.names[i] for i in np.nonzero(inputs['joints_mask'][:, 0])[0]} == filled - {'L_Wrist', 'R_Wrist'}
    assert inputs['img'].shape == (3, 256, 256) and inputs['img'].dtype == np.float32
    # The crop's centre pixel is the bbox centre of the image (bilinear sample there).
    cx, cy = centre
    x0, y0 = int(np.floor(cx)), int(np.floor(cy))
    fx, fy = cx - x0, cy - y0
    ref = ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x0 + 1] + (1 - fx) * fy * img[y0 + 1, x0]
           + fx * fy * img[y0 + 1, x0 + 1]) / 255
    np.testing.assert_allclose(inputs['img'][:, 128, 128], ref, atol=0.02)


class RecordingModel(torch.nn.Module):
    """Stands in for the network: records how it was called and returns fixed outputs."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, inputs, targets, meta_info, mode, render=False):
        self.calls.append(('forward', mode, render, cfg.render))
        batch = inputs['img'].shape[0]
        return {'cam_param': torch.full((batch, 3), 0.5), 'mesh_cam_render': torch.ones(batch, 4, 3)}

    def camera_translation(self, cam_param, meta_info=None, render=False):
        self.calls.append(('camera_translation', render, cfg.render))
        return cam_param * meta_info['bbox'][:, :3]


def test_predict_asks_for_render_mode_without_touching_the_configuration():
    from common.demo import predict
    model = RecordingModel()
    samples = [{'img': np.zeros((3, 8, 8), np.float32), 'joints': np.zeros((30, 3), np.float32),
                'joints_mask': np.ones((30, 1), np.float32), 'bbox': np.float32([2, 4, 6, 8])}]
    cfg.render = False
    out = predict(model, samples, torch.device('cpu'))
    assert model.calls == [('forward', 'test', True, False), ('camera_translation', True, False)]
    np.testing.assert_array_equal(out['cam_trans'], [[1.0, 2.0, 3.0]])
    assert isinstance(out['mesh_cam_render'], np.ndarray) and out['mesh_cam_render'].shape == (1, 4, 3)


def _imported_modules(path):
    """Absolute module names a source file imports (at any depth of its code)."""
    tree = ast.parse(open(path).read())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            # ``from package import module`` imports the submodule as well.
            names += [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    return names


def _is_module(name, root):
    """True when ``name`` is a module (not a class or function) of this repository."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:   # 'common.utils.vis.SMPL30'-like names: the parent is a module
        return False
    return spec is not None and spec.origin is not None and os.path.abspath(spec.origin).startswith(root)


def test_library_modules_do_not_import_the_configuration():
    """The demo library and the drawing code, and the repository modules they import, take
    everything as arguments: none of them imports ``main``."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pending, seen = ['common.demo', 'common.demo_run', 'common.demo_inputs', 'common.demo_poses',
                     'common.pose_estimator', 'common.utils.vis', 'common.utils.render'], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = importlib.util.find_spec(name).origin
        for imported in _imported_modules(path):
            assert not (imported == 'main' or imported.startswith('main.')), f'{name} imports {imported}'
            if imported.split('.')[0] in ('common', 'data') and _is_module(imported, root):
                pending.append(imported)
    assert {'common.utils.preprocessing', 'common.utils.joints', 'common.utils.checkpoint'} <= seen


# ------------------------------------------------------------------------------ end to end
def parse_obj(path):
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            assert parts[0] in ('v', 'f') and len(parts) == 4, line
            (verts if parts[0] == 'v' else faces).append([float(p) if parts[0] == 'v' else int(p) for p in parts[1:]])
    return np.array(verts), np.array(faces, np.int64) - 1


def check_demo_outputs(paths, img_path, smpl_dir, n_people):
    """OBJ = smplpytorch's neutral mesh of the JSON's parameters; each person's colour where
    only its mesh projects; the image elsewhere unchanged."""
    from smplpytorch.pytorch.smpl_layer import SMPL_Layer
    from common.utils import vis
    summary = json.load(open(paths['json']))
    people = summary['people']
    assert len(people) == n_people and len(paths['obj']) == n_people
    layer = SMPL_Layer(gender='neutral', model_root=str(smpl_dir))
    original = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB).astype(np.float64)
    rendered = cv2.cvtColor(cv2.imread(paths['render']), cv2.COLOR_BGR2RGB).astype(np.float64)
    assert rendered.shape == original.shape
    pose2d = cv2.imread(paths['pose_2d'])
    assert pose2d is not None and pose2d.shape == original.shape
    masks = []
    for k, p in enumerate(people):
        assert len(p['smpl_pose']) == 72 and len(p['smpl_shape']) == 10 and len(p['cam_trans']) == 3
        verts, faces = parse_obj(paths['obj'][k])
        assert verts.shape == (6890, 3) and faces.shape == (13776, 3)
        with torch.no_grad():
            ref, _ = layer(torch.tensor([p['smpl_pose']]), torch.tensor([p['smpl_shape']]),
                           torch.tensor([p['cam_trans']]))
        np.testing.assert_allclose(verts, ref[0].double().numpy(), atol=1e-4)
        # Render camera: focal 5000, principal point at the bbox centre.
        bbox = np.asarray(p['bbox'])
        uv = verts[:, :2] / verts[:, 2:] * 5000 + bbox[:2] + bbox[2:] / 2
        mask = np.zeros(original.shape[:2], np.uint8)
        for tri in faces:
            if np.abs(uv[tri]).max() < 1e5:
                cv2.fillConvexPoly(mask, np.rint(uv[tri] * 16).astype(np.int32), 1, shift=4)
        masks.append(mask.astype(bool))
    kernel = np.ones((7, 7), np.uint8)
    anywhere = np.any(masks, axis=0)
    outside = ~cv2.dilate(anywhere.astype(np.uint8), kernel).astype(bool)
    if outside.any():
        assert np.abs(rendered - original)[outside].mean() < 4
    colors = vis.person_colors(n_people)
    checked = 0
    for k, mask in enumerate(masks):
        only = mask & ~np.any([m for j, m in enumerate(masks) if j != k], axis=0) if n_people > 1 else mask
        only = cv2.erode(only.astype(np.uint8), kernel).astype(bool)
        if only.sum() < 30:
            continue  # hidden behind the others or outside the image
        chroma = rendered[only] / rendered[only].sum(1, keepdims=True)
        assert np.mean(np.abs(chroma - colors[k] / colors[k].sum()).max(1) < 0.04) > 0.9
        checked += 1
    assert checked >= 1
    return summary


@pytest.fixture
def demo_case(data_cfg, synthetic_data_root):
    """The first synthetic 3DPW test image and its annotations."""
    with open(os.path.join(synthetic_data_root, 'PW3D', 'data', '3DPW_latest_test.json')) as f:
        db = json.load(f)
    img = db['images'][0]
    anns = [a for a in db['annotations'] if a['image_id'] == img['id']]
    path = os.path.join(synthetic_data_root, 'PW3D', 'data', 'imageFiles', img['sequence'], img['file_name'])
    return path, img, anns


@pytest.mark.slow
def test_quickstart_demo_with_openpose_json(trained_snapshot, demo_case, synthetic_data_root, synthetic_smpl_dir,
                                            tmp_path):
    from tool.quickstart import run_quickstart_demo
    img_path, img, anns = demo_case
    state = cfg.snapshot()
    paths = run_quickstart_demo(trained_snapshot / 'checkpoint' / 'snapshot_0.pth.tar', synthetic_data_root,
                                tmp_path / 'qs', smpl_dir=synthetic_smpl_dir, log=lambda *a: None)
    assert cfg.snapshot() == state   # cfg left as it was
    assert paths['image'] == img_path
    written = json.load(open(paths['openpose_json']))
    assert len(written['people']) == len(anns)
    assert all(len(p['pose_keypoints_2d']) == 54 for p in written['people'])
    overlay = cv2.imread(paths['pw3d_render'])
    original = cv2.imread(img_path)
    assert overlay.shape == original.shape and np.abs(overlay.astype(int) - original).mean() > 1
    summary = check_demo_outputs(paths, img_path, synthetic_smpl_dir, len(anns))
    assert summary['pose_layouts'] == ['openpose-coco18']
    assert '--pose' in paths['command'] and '--model' in paths['command']


@pytest.mark.slow
def test_demo_cli_with_coco_results(trained_snapshot, demo_case, synthetic_smpl_dir, synthetic_data_root,
                                    tmp_path, capsys):
    from main.demo import main
    img_path, img, anns = demo_case
    entries = []
    for a in anns:
        openpose = np.asarray(a['openpose_result'], np.float64)
        entries.append({'image_id': img['id'], 'category_id': 1, 'score': 0.9,
                        'keypoints': openpose[list(OPENPOSE18_TO_COCO17)].reshape(-1).tolist()})
    first = np.asarray(entries[0]['keypoints']).reshape(17, 3)
    duplicate = first + [3.0, -2.0, 0.0]
    weak = first.copy()
    weak[:, 2] = 0.03
    entries.append({'image_id': img['id'], 'keypoints': duplicate.reshape(-1).tolist(), 'score': 0.5})
    entries.append({'image_id': img['id'], 'keypoints': weak.reshape(-1).tolist(), 'score': 0.1})
    entries.append({'image_id': 'another', 'keypoints': first.reshape(-1).tolist(), 'score': 0.9})
    pose_path = write_json(tmp_path / 'coco_results.json', entries)
    out_dir = tmp_path / 'out'
    paths = main(['--gpu', '0', '--img', img_path, '--pose', pose_path, '--image_id', str(img['id']),
                  '--model', str(trained_snapshot / 'checkpoint' / 'snapshot_0.pth.tar'), '--out', str(out_dir),
                  '--smpl_dir', str(synthetic_smpl_dir), '--data_dir', str(synthetic_data_root)])
    stem = os.path.splitext(img['file_name'])[0]
    assert sorted(os.listdir(out_dir)) == sorted(
        [f'{stem}_render.jpg', f'{stem}_2dpose.jpg', f'{stem}_smpl.json']
        + [f'{stem}_person{k}.obj' for k in range(len(anns))])
    summary = check_demo_outputs(paths, img_path, synthetic_smpl_dir, len(anns))
    assert [p['input_index'] for p in summary['people']] == list(range(len(anns)))
    reasons = {s['index']: s['reason'] for s in summary['skipped']}
    assert set(reasons) == {len(anns), len(anns) + 1}
    assert 'duplicate of input person 0' in reasons[len(anns)]
    assert 'too few confident joints' in reasons[len(anns) + 1]
    err = capsys.readouterr().err
    assert f'input person {len(anns) + 1} skipped: too few confident joints' in err
    # The 2D-pose picture shows the accepted people's joints in their colours.
    drawn = cv2.cvtColor(cv2.imread(paths['pose_2d']), cv2.COLOR_BGR2RGB).astype(float)
    original = cv2.cvtColor(cv2.imread(img_path), cv2.COLOR_BGR2RGB).astype(float)
    changed = np.abs(drawn - original).sum(2) > 60
    for k, p in enumerate(summary['people']):
        joints = np.asarray(entries[k]['keypoints']).reshape(17, 3)
        conf = joints[joints[:, 2] > 0.1, :2]
        hits = [changed[int(round(y)), int(round(x))] for x, y in conf
                if 0 <= round(x) < original.shape[1] and 0 <= round(y) < original.shape[0]]
        assert np.mean(hits) > 0.8


@pytest.mark.slow
def test_cli_estimator_on_an_image_folder(trained_snapshot, demo_case, synthetic_smpl_dir, synthetic_data_root,
                                          tmp_path):
    """``main/demo.py --img FOLDER`` with the estimator (tiny fixed-output ONNX models: the
    plumbing, not detection quality): every picture gets its overlay, 2D-pose picture, OBJs
    and summary, the OBJs are the SMPL meshes of the summary's parameters."""
    for name in ('onnx', 'onnxruntime', 'rtmlib'):
        pytest.importorskip(name)
    import shutil
    from main.demo import main
    from tests.test_demo_sources import tiny_estimator_models
    img_path, _, _ = demo_case
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name in ('first.jpg', 'second.jpg'):
        shutil.copy(img_path, folder / name)
    det, pose = tiny_estimator_models(tmp_path)
    out_dir = tmp_path / 'out'
    paths = main(['--img', str(folder), '--det_model', det, '--pose_model', pose, '--batch_size', '3',
                  '--model', str(trained_snapshot / 'checkpoint' / 'snapshot_0.pth.tar'), '--out', str(out_dir),
                  '--smpl_dir', str(synthetic_smpl_dir), '--data_dir', str(synthetic_data_root)])
    count = paths['people']
    assert paths['frames'] == 2 and count >= 1
    summary = check_demo_outputs(paths, str(folder / 'first.jpg'), synthetic_smpl_dir, count)
    assert summary['pose_layouts'] == ['coco17-estimator'] and 'det.onnx' in summary['pose_file']
    assert len(summary['people']) + len(summary['skipped']) == 2           # the two fixed detections
    assert sorted(os.listdir(out_dir)) == sorted(
        [f'{stem}{suffix}' for stem in ('first', 'second') for suffix in ('_render.jpg', '_2dpose.jpg', '_smpl.json')]
        + [f'{stem}_person{k}.obj' for stem in ('first', 'second') for k in range(count)])
    second = json.load(open(out_dir / 'second_smpl.json'))
    for a, b in zip(summary['people'], second['people']):       # the same picture twice, in one batch
        np.testing.assert_allclose(a['smpl_pose'], b['smpl_pose'], atol=1e-5)


class SquareNetwork(torch.nn.Module):
    """A stand-in network whose "mesh" is a 0.1 m square 10 m in front of the render camera
    (50 px wide through focal 5000, centred on the person's box), with fixed parameters."""

    mesh_face = np.array([[0, 1, 2], [0, 2, 3]])

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, targets, meta_info, mode, render=False):
        assert render and mode == 'test'
        batch = inputs['img'].shape[0]
        square = torch.tensor([[-0.05, -0.05, 10.0], [0.05, -0.05, 10.0], [0.05, 0.05, 10.0], [-0.05, 0.05, 10.0]])
        index = torch.arange(batch, dtype=torch.float32)[:, None]
        return {'cam_param': torch.cat([index, -index, torch.ones(batch, 1)], 1),
                'smpl_pose': index * 0.01 + torch.zeros(batch, 72), 'smpl_shape': index + torch.zeros(batch, 10),
                'mesh_cam_render': square.expand(batch, 4, 3).clone()}

    def camera_translation(self, cam_param, meta_info=None, render=False):
        return cam_param * 2


def test_run_demo_writes_each_persons_mesh_parameters_and_overlay(tmp_path):
    from common.demo_run import run_demo
    from common.utils import vis
    img_path = str(tmp_path / 'street.png')
    cv2.imwrite(img_path, np.full((200, 320, 3), 40, np.uint8))
    rng = np.random.default_rng(7)
    poses = [person((90, 100), 150, rng), person((230, 100), 150, rng)]
    pose_path = write_json(tmp_path / 'street.json', [
        {'image_id': 1, 'keypoints': p.reshape(-1).tolist(), 'score': 0.9} for p in poses])
    paths = run_demo(img_path, pose_path, tmp_path / 'out', SquareNetwork(), GEOMETRY, log=lambda *a: None)
    assert paths['people'] == 2 and paths['skipped'] == []
    assert [os.path.basename(p) for p in paths['obj']] == ['street_person0.obj', 'street_person1.obj']
    summary = json.load(open(paths['json']))
    assert summary['pose_layouts'] == ['coco-results'] and summary['checkpoint'] is None
    rendered = cv2.cvtColor(cv2.imread(paths['render']), cv2.COLOR_BGR2RGB).astype(float)
    colors = vis.person_colors(2)
    for k, entry in enumerate(summary['people']):
        assert entry['input_index'] == k and entry['obj'] == f'street_person{k}.obj'
        np.testing.assert_allclose(entry['smpl_pose'], np.full(72, 0.01 * k), atol=1e-7)
        np.testing.assert_allclose(entry['smpl_shape'], np.full(10, k))
        np.testing.assert_allclose(entry['cam_trans'], [2 * k, -2 * k, 2])
        bbox = ref_bbox(ref_smpl30(poses[k], COCO17_TO_SMPL30, False), 320, 200)
        np.testing.assert_allclose(entry['bbox'], bbox, atol=1e-3)
        centre = bbox[:2] + bbox[2:] / 2
        assert entry['render_camera'] == {'focal': [5000.0, 5000.0], 'princpt': list(np.round(centre, 4))}
        verts, faces = parse_obj(paths['obj'][k])
        np.testing.assert_allclose(verts, [[-0.05, -0.05, 10], [0.05, -0.05, 10], [0.05, 0.05, 10], [-0.05, 0.05, 10]])
        np.testing.assert_array_equal(faces, SquareNetwork.mesh_face)
        # The 50 px square at the box centre shows the person's colour (shaded), the corners the image.
        x, y = np.rint(centre).astype(int)
        patch = rendered[y - 20:y + 20, x - 20:x + 20].reshape(-1, 3)
        np.testing.assert_allclose(patch / patch.sum(1, keepdims=True),
                                   np.broadcast_to(colors[k] / colors[k].sum(), patch.shape), atol=0.02)
    assert np.all(rendered[:5, :5] == 40)


def test_all_people_skipped_needs_no_model(tmp_path, capsys):
    from common.demo_run import run_demo
    img = np.full((60, 80, 3), 90, np.uint8)
    img_path = str(tmp_path / 'img.png')
    cv2.imwrite(img_path, img)
    weak = person((40, 30), 40, np.random.default_rng(4), score=0.02)
    pose_path = write_json(tmp_path / 'p.json', {'people': [
        {'pose_keypoints_2d': np.zeros(54).tolist()},                 # OpenPose COCO-18, nothing detected
        {'pose_keypoints_2d': weak.reshape(-1).tolist()}]})           # COCO-17, score sum 0.34
    paths = run_demo(img_path, pose_path, tmp_path / 'out', None, GEOMETRY, log=lambda *a: None)
    summary = json.load(open(paths['json']))
    assert summary['people'] == [] and paths['obj'] == []
    assert [s['index'] for s in summary['skipped']] == [0, 1]
    assert all('too few confident joints' in s['reason'] for s in summary['skipped'])
    assert np.abs(cv2.imread(paths['render']).astype(int) - 90).max() <= 2
    assert 'input person 1 skipped' in capsys.readouterr().err


def test_cli_errors_before_any_model_work(tmp_path):
    from common.demo import PoseFileError
    from main.demo import main, run_cli
    good_pose = write_json(tmp_path / 'p.json', {'people': []})
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 this is not a jpeg')
    missing_model = str(tmp_path / 'no_model.pth.tar')
    with pytest.raises(OSError, match='broken.jpg'):
        main(['--img', str(broken), '--pose', good_pose, '--model', missing_model])
    with pytest.raises(FileNotFoundError, match='nothing.jpg'):
        main(['--img', str(tmp_path / 'nothing.jpg'), '--pose', good_pose, '--model', missing_model])
    img_path = str(tmp_path / 'ok.png')
    cv2.imwrite(img_path, np.zeros((8, 8, 3), np.uint8))
    bad_pose = tmp_path / 'bad.json'
    bad_pose.write_text('{"people": [{"pose_keypoints_2d": [1, 2, 3, 4, 5, 6]}]}')
    with pytest.raises(PoseFileError, match='bad.json'):
        main(['--img', img_path, '--pose', str(bad_pose), '--model', missing_model])
    with pytest.raises(SystemExit, match='ERROR: .*Checkpoint not found: .*no_model.pth.tar'):
        run_cli(['--img', img_path, '--pose', good_pose, '--model', missing_model])
