"""Recover an SMPL mesh for every person in an image from its 2D poses.

    python main/demo.py --gpu 0 --img IMAGE --pose POSES.json --model CHECKPOINT [--out DIR]

Pose files: the OpenPose JSON format (``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``,
BODY_25, COCO-18 or COCO-17 layout, told apart by length) or the COCO keypoint-results
format (``[{"image_id", "keypoints": [x, y, s] * 17, "score"}, ...]``).  People are selected
and cropped by the 3DCrowdNet demo rules (DATA.md §3.8b) and run through the network in
render mode (MODEL.md §5.6).  Written into ``--out`` (default ``<output_root>/demo``):

* ``<stem>_render.jpg``: every mesh over the image, depth-ordered, one colour per person;
* ``<stem>_2dpose.jpg``: the input 2D poses (accepted people in their colour, skipped grey);
* ``<stem>_person<k>.obj``: person k's mesh in its render camera (metres);
* ``<stem>_smpl.json``: per person the SMPL pose (72, axis-angle), shape (10), camera
  translation (3, metres), bbox and render camera; and the skipped people with the reason.

Body model and regressor folders: ``--smpl_dir`` / ``--data_dir`` beat ``--cfg``, which beats
the ``config`` stored in snapshots of this code base (used where its folders exist), which
beats the defaults.  The checkpoint is loaded strictly.  Runs from the repo root or as
``python demo.py`` from ``main/``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from main.config import cfg  # noqa: E402
from common.utils import checkpoint as ckpt_io  # noqa: E402
from common.utils import vis  # noqa: E402
from common.utils.device import select_device  # noqa: E402
from common.utils.preprocessing import augmentation, get_bbox, in_bounds_mask, load_img, process_bbox  # noqa: E402
from common.utils.smpl import JOINTS_NAME, SMPL, SMPLFileError  # noqa: E402
from common.utils.transforms import transform_joint_to_other_db  # noqa: E402
from main.model import get_model  # noqa: E402
from common.utils.cli import gpu_ids_arg  # noqa: E402

SCORE_THR = 0.1          # a joint is confident above this score (§3.8b)
MIN_SCORE_SUM = 1.0      # a person needs at least this sum of joint scores
DUPLICATE_PX = 20.0      # mean |dx|,|dy| below this against an accepted person: a duplicate
SKIPPED_COLOR = (0.6, 0.6, 0.6)

OPENPOSE18_JOINTS_NAME = (
    'Nose', 'Neck', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'R_Hip', 'R_Knee',
    'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'R_Eye', 'L_Eye', 'R_Ear', 'L_Ear')
BODY25_JOINTS_NAME = (
    'Nose', 'Neck', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'MidHip', 'R_Hip',
    'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'R_Eye', 'L_Eye', 'R_Ear', 'L_Ear', 'L_BigToe',
    'L_SmallToe', 'L_Heel', 'R_BigToe', 'R_SmallToe', 'R_Heel')
COCO17_JOINTS_NAME = (
    'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow',
    'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle')
OPENPOSE_LAYOUTS = {75: ('openpose-body25', BODY25_JOINTS_NAME), 54: ('openpose-coco18', OPENPOSE18_JOINTS_NAME),
                    51: ('coco17', COCO17_JOINTS_NAME)}


class PoseFileError(ValueError):
    """The pose file is missing pieces, holds non-numbers, or is in no supported format."""


# ----------------------------------------------------------------------------- pose files
@dataclass
class Detection:
    """One person of the pose file: ``joints`` (J, 3) ``[x, y, score]`` named by ``names``."""
    index: int
    joints: np.ndarray
    names: tuple
    layout: str


def read_pose_file(path, img_path=None, image_id=None):
    """Parse an OpenPose or COCO keypoint-results JSON file into a list of :class:`Detection`.

    For a COCO-results file holding several images, ``image_id`` picks one; without it the
    image is matched by its file stem (``000000000785.jpg`` -> id 785).  Raises
    ``FileNotFoundError`` for a missing file and :class:`PoseFileError` (naming the file and
    the offending entry) for anything malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pose file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoseFileError(f"Pose file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and 'people' in data:
        return _read_openpose(data['people'], path)
    if isinstance(data, list) and all(isinstance(e, dict) and 'keypoints' in e for e in data):
        return _read_coco_results(data, path, img_path, image_id)
    raise PoseFileError(
        f"Pose file {path} is in no supported format: expected the OpenPose format "
        "{\"people\": [{\"pose_keypoints_2d\": [x, y, c, ...]}, ...]} or the COCO keypoint-results format "
        "[{\"image_id\": ..., \"keypoints\": [x, y, s] * 17, \"score\": ...}, ...].")


def _keypoints(values, what, path):
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PoseFileError(f"Pose file {path}: {what} must be a flat list of numbers ({exc}).") from exc
    if not np.isfinite(arr).all():
        raise PoseFileError(f"Pose file {path}: {what} holds non-finite values.")
    return arr


def _read_openpose(people, path):
    if not isinstance(people, list):
        raise PoseFileError(f"Pose file {path}: 'people' must be a list.")
    detections = []
    for i, person in enumerate(people):
        # 'pose_keypoints' is the name OpenPose used before version 1.2.
        key = next((k for k in ('pose_keypoints_2d', 'pose_keypoints') if isinstance(person, dict) and k in person),
                   None)
        if key is None:
            raise PoseFileError(f"Pose file {path}: people[{i}] has no 'pose_keypoints_2d'.")
        values = _keypoints(person[key], f'people[{i}].{key}', path)
        if len(values) not in OPENPOSE_LAYOUTS:
            raise PoseFileError(
                f"Pose file {path}: people[{i}].{key} has {len(values)} numbers; expected 75 "
                "(OpenPose BODY_25), 54 (OpenPose COCO-18) or 51 (COCO-17), as x, y, confidence triples.")
        layout, names = OPENPOSE_LAYOUTS[len(values)]
        detections.append(Detection(i, values.reshape(-1, 3), names, layout))
    return detections


def _read_coco_results(entries, path, img_path, image_id):
    ids = [e.get('image_id') for e in entries]
    distinct = list(dict.fromkeys(str(i) for i in ids))
    if image_id is not None:
        wanted = str(image_id)
        if wanted not in distinct:
            raise PoseFileError(f"Pose file {path} has no entry with image_id {image_id} "
                                f"(ids there: {', '.join(distinct[:10])}{' ...' if len(distinct) > 10 else ''}).")
    elif len(distinct) <= 1:
        wanted = distinct[0] if distinct else None
    else:
        wanted = _image_id_from_name(img_path, distinct)
        if wanted is None:
            raise PoseFileError(
                f"Pose file {path} holds poses of {len(distinct)} images and none has an image_id matching "
                f"the image name {Path(img_path).name if img_path else '?'}; pass --image_id.")
    detections = []
    for i, entry in enumerate(entries):
        if str(entry.get('image_id')) != wanted:
            continue
        values = _keypoints(entry['keypoints'], f'entry {i} keypoints', path)
        if len(values) != 51:
            raise PoseFileError(f"Pose file {path}: entry {i} keypoints has {len(values)} numbers; the COCO "
                                "results format has 17 x, y, score triples (51).")
        detections.append(Detection(i, values.reshape(17, 3), COCO17_JOINTS_NAME, 'coco-results'))
    return detections


def _image_id_from_name(img_path, ids):
    if img_path is None:
        return None
    stem = Path(img_path).stem
    for candidate in ids:
        if candidate == stem or (stem.isdigit() and candidate.isdigit() and int(stem) == int(candidate)):
            return candidate
    return None


# ----------------------------------------------------------------------------- selection
def append_midpoint(joints, names, first, second, new_name):
    """Append ``new_name`` as the midpoint of two joints, score = product (DATA.md §2.10)."""
    a, b = joints[names.index(first)], joints[names.index(second)]
    row = np.array([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, a[2] * b[2]])
    return np.concatenate([joints, row[None]], axis=0), tuple(names) + (new_name,)


def to_smpl30(detection, joints_name):
    """(30, 3) float32 image-space ``[x, y, score]`` of a detection in SMPL-30 order.

    The pelvis is appended as the hips' midpoint and, where the layout has no detected neck
    (COCO), the neck as the shoulders' midpoint (§2.10); then transfer by name (§2.1).
    """
    joints, names = append_midpoint(detection.joints, detection.names, 'L_Hip', 'R_Hip', 'Pelvis')
    if 'Neck' not in names:
        joints, names = append_midpoint(joints, names, 'L_Shoulder', 'R_Shoulder', 'Neck')
    return transform_joint_to_other_db(joints, names, joints_name)


def duplicate_of(joints, accepted_joints):
    """(index into ``accepted_joints``, mean distance or None) of the first person ``joints``
    duplicates (§3.8b): mean |dx|, |dy| over joints confident in both < 20 px, or no joint
    confident in both.  None if it duplicates nobody."""
    for k, other in enumerate(accepted_joints):
        both = (joints[:, 2] > SCORE_THR) & (other[:, 2] > SCORE_THR)
        if not both.any():
            return k, None
        distance = float(np.abs(joints[both, :2] - other[both, :2]).mean())
        if distance < DUPLICATE_PX:
            return k, distance
    return None


@dataclass
class Person:
    """An accepted person: input index, SMPL-30 image joints (30, 3) and processed bbox (4,)."""
    index: int
    joints_img: np.ndarray
    bbox: np.ndarray


def select_people(detections, img_width, img_height, joints_name):
    """Apply the §3.8b rules in file order: ``(accepted [Person], skipped [dict(index, reason)])``."""
    accepted, skipped, reference = [], [], []
    for det in detections:
        joints = to_smpl30(det, joints_name)
        score_sum = float(joints[:, 2].sum())
        if score_sum < MIN_SCORE_SUM or not (joints[:, 2] != 0).any():
            skipped.append({'index': det.index, 'reason': f'too few confident joints (score sum {score_sum:.2f} '
                                                          f'< {MIN_SCORE_SUM})'})
            continue
        dup = duplicate_of(joints, [r[1] for r in reference])
        if dup is not None:
            other = reference[dup[0]][0]
            how = (f'mean joint difference {dup[1]:.1f} px < {DUPLICATE_PX:.0f} px' if dup[1] is not None
                   else 'no confident joint in common')
            skipped.append({'index': det.index, 'reason': f'duplicate of input person {other} ({how})'})
            continue
        reference.append((det.index, joints))
        valid = (joints[:, 2] > SCORE_THR).astype(np.float32)
        if not valid.any():
            skipped.append({'index': det.index, 'reason': f'too few confident joints (none above {SCORE_THR})'})
            continue
        bbox = process_bbox(get_bbox(joints, valid), img_width, img_height)
        if bbox is None:
            skipped.append({'index': det.index, 'reason': 'no usable box around its confident joints'})
            continue
        accepted.append(Person(det.index, joints, bbox))
    return accepted, skipped


def person_inputs(img, person):
    """Network inputs of one person (§3.8b): crop, heatmap-space joints, mask, transforms.

    img (H, W, 3) float32 RGB 0..255.  Returns a dict of ``img`` (3, 256, 256) float32 in
    [0, 1], ``joints`` (30, 3) ``[x_hm, y_hm, score]``, ``joints_mask`` (30, 1),
    ``bbox`` (4,), ``img2bb_trans`` / ``bb2img_trans`` (2, 3), all float32 NumPy.
    """
    patch, img2bb, bb2img, _, _ = augmentation(img, person.bbox, 'test')
    joints = person.joints_img.astype(np.float32).copy()
    xy1 = np.concatenate([joints[:, :2], np.ones((len(joints), 1), np.float32)], axis=1)
    joints[:, :2] = xy1 @ img2bb.T
    joints[:, 0] = joints[:, 0] / cfg.input_img_shape[1] * cfg.output_hm_shape[2]
    joints[:, 1] = joints[:, 1] / cfg.input_img_shape[0] * cfg.output_hm_shape[1]
    valid = (joints[:, 2:] > SCORE_THR).astype(np.float32)
    return {'img': np.ascontiguousarray(patch.transpose(2, 0, 1) / 255.0, dtype=np.float32),
            'joints': joints.astype(np.float32), 'joints_mask': valid * in_bounds_mask(joints),
            'bbox': np.asarray(person.bbox, np.float32), 'img2bb_trans': img2bb.astype(np.float32),
            'bb2img_trans': bb2img.astype(np.float32)}


# ----------------------------------------------------------------------------- model
def read_checkpoint(checkpoint_path):
    """The checkpoint dict (CPU tensors), with clear errors for a missing or broken file."""
    return ckpt_io.load_checkpoint_file(checkpoint_path, map_location='cpu')


def apply_checkpoint_config(checkpoint, log=print):
    """Take ``resnet_type``, ``smpl_model_dir`` and ``data_dir`` from a checkpoint's stored
    config (snapshots of this code base store it; released files do not), folders only where
    they exist.  Returns the names applied."""
    stored = checkpoint.get('config') if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict):
        return []
    applied = []
    if isinstance(stored.get('resnet_type'), int):
        cfg.resnet_type = stored['resnet_type']
        applied.append('resnet_type')
    for key in ('smpl_model_dir', 'data_dir'):
        value = stored.get(key)
        if isinstance(value, str) and os.path.isdir(value):
            setattr(cfg, key, value)
            applied.append(key)
    if applied:
        log(f"Using {', '.join(f'{k}={getattr(cfg, k)}' for k in applied)} from the checkpoint's config.")
    return applied


def load_model(checkpoint, device, source='checkpoint'):
    """``get_model(..., 'test')`` with the checkpoint's network loaded strictly, in eval mode."""
    smpl = SMPL()
    model = get_model(smpl.vertex_num, smpl.joint_num, 'test', human_model=smpl)
    ckpt_io.load_network_strict(model, ckpt_io.network_state_of(checkpoint, source), source=source)
    return model.to(device).eval()


def predict(model, samples, device):
    """Run the network in render mode on a list of :func:`person_inputs` dicts.

    Returns NumPy arrays: the test outputs of MODEL.md §5.8 plus ``cam_trans`` (N, 3), the
    render-mode camera translation in metres.
    """
    def stack(key):
        return torch.from_numpy(np.stack([s[key] for s in samples])).to(device)
    inputs = {key: stack(key) for key in ('img', 'joints', 'joints_mask')}
    meta_info = {'bbox': stack('bbox')}
    render_before = cfg.render
    cfg.render = True  # the render camera of §5.6: depth scaled to the bbox, overlays the image
    try:
        with torch.no_grad():
            out = model(inputs, {}, meta_info, 'test')
            out['cam_trans'] = model.camera_translation(out['cam_param'], meta_info, 'test')
    finally:
        cfg.render = render_before
    return {k: v.detach().float().cpu().numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- demo
def pick_device(gpu_ids, log_warning):
    """The demo's device from ``--gpu`` (CPU with one warning when CUDA is unavailable)."""
    setup = select_device(gpu_ids)
    for message in setup.warnings:
        log_warning(message)
    return setup.device


def _warn(message):
    print(f'WARNING: {message}', file=sys.stderr)


def run_demo(img_path, pose_path, out_dir, checkpoint=None, model=None, device=None, image_id=None,
             checkpoint_path=None, log=print):
    """Meshes for every person of ``img_path`` from the poses in ``pose_path``; writes the outputs.

    Give either a loaded ``model`` (with ``device``) or a ``checkpoint`` dict
    (:func:`read_checkpoint`); the image and pose file are checked before any model work.
    Returns ``{'render', 'pose_2d', 'json': path, 'obj': [paths], 'people': int,
    'skipped': [dict(index, reason)]}``.
    """
    img = load_img(img_path)
    height, width = img.shape[:2]
    detections = read_pose_file(pose_path, img_path, image_id)
    people, skipped = select_people(detections, width, height, JOINTS_NAME)
    for entry in skipped:
        _warn(f"input person {entry['index']} skipped: {entry['reason']}")
    log(f'{len(detections)} input poses, {len(people)} people kept, {len(skipped)} skipped.')

    out_dir = Path(vis.ensure_dir(out_dir))
    stem = Path(img_path).stem
    colors = vis.person_colors(len(people))
    results, objs, meshes = [], [], []
    if people:
        if model is None:
            if checkpoint is None:
                raise ValueError("run_demo needs a loaded model or a checkpoint dict (read_checkpoint).")
            device = device if device is not None else torch.device('cpu')
            model = load_model(checkpoint, device, source=str(checkpoint_path or 'checkpoint'))
        samples = [person_inputs(img, p) for p in people]
        out = predict(model, samples, device if device is not None else next(model.parameters()).device)
        faces = model.mesh_face
        for k, person in enumerate(people):
            mesh = out['mesh_cam_render'][k].astype(np.float64)
            focal, princpt = vis.render_camera(person.bbox)
            objs.append(vis.write_obj(out_dir / f'{stem}_person{k}.obj', mesh, faces))
            meshes.append((mesh, focal, princpt))
            results.append({
                'person': k, 'input_index': person.index, 'color': colors[k].round(4).tolist(),
                'bbox': np.asarray(person.bbox, np.float64).round(3).tolist(),
                'smpl_pose': out['smpl_pose'][k].tolist(), 'smpl_shape': out['smpl_shape'][k].tolist(),
                'cam_trans': out['cam_trans'][k].tolist(),
                'render_camera': {'focal': focal.tolist(), 'princpt': princpt.round(4).tolist()},
                'obj': os.path.basename(objs[-1])})
    else:
        faces = None

    image = vis.as_uint8_image(img)
    rendered = image
    if meshes:
        rendered = vis.render_people(image, [m for m, _, _ in meshes], faces, [f for _, f, _ in meshes],
                                     [c for _, _, c in meshes], colors=colors)
    render_path = vis.save_image(out_dir / f'{stem}_render.jpg', rendered)
    pose_path_out = vis.save_image(out_dir / f'{stem}_2dpose.jpg',
                                   draw_input_poses(image, detections, people, colors))
    summary = {
        'image': str(img_path), 'pose_file': str(pose_path),
        'pose_layouts': sorted({d.layout for d in detections}),
        'checkpoint': str(checkpoint_path) if checkpoint_path else None,
        'units': 'smpl_pose: 24x3 axis-angle (radians), relative rotations; cam_trans: metres; the mesh is '
                 'SMPL_neutral(pose, shape) + cam_trans, seen through render_camera (pixels of the image)',
        'people': results, 'skipped': skipped}
    json_path = out_dir / f'{stem}_smpl.json'
    with open(json_path, 'w') as f:
        json.dump(summary, f, indent=1)
    log(f'Wrote {render_path}, {pose_path_out}, {json_path} and {len(objs)} OBJ files.')
    return {'render': render_path, 'pose_2d': pose_path_out, 'json': str(json_path), 'obj': objs,
            'people': len(people), 'skipped': skipped}


def draw_input_poses(image, detections, people, colors):
    """The input poses on the image: accepted people in their colour with their box, the
    skipped ones in grey."""
    accepted = {p.index: k for k, p in enumerate(people)}
    out = image
    for det in detections:
        if det.index not in accepted:
            out = vis.draw_input_pose(out, to_smpl30(det, JOINTS_NAME), SCORE_THR, color=SKIPPED_COLOR)
    for k, person in enumerate(people):
        out = vis.draw_input_pose(out, person.joints_img, SCORE_THR, color=colors[k])
        out = vis.draw_bbox(out, person.bbox, color=colors[k])
    return out


# ----------------------------------------------------------------------------- quickstart
def openpose_json_from_annotations(annotations, path):
    """Write an OpenPose (COCO-18 layout) file from 3DPW annotations' ``openpose_result``."""
    people = [{'person_id': [-1],
               'pose_keypoints_2d': np.asarray(a['openpose_result'], np.float64).reshape(-1).tolist()}
              for a in annotations]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        json.dump({'version': 1.3, 'people': people}, f)
    return str(path)


def render_test_image(model, dataset, img_path, out_path, device):
    """Render every annotated person of one 3DPW test image (test pipeline, render mode)."""
    indices = [i for i, d in enumerate(dataset.datalist) if d['img_path'] == img_path]
    samples = []
    for i in indices:
        inputs, _, meta_info = dataset[i]
        samples.append({'img': inputs['img'].numpy() if torch.is_tensor(inputs['img']) else inputs['img'],
                        'joints': inputs['joints'], 'joints_mask': inputs['joints_mask'],
                        'bbox': meta_info['bbox']})
    out = predict(model, samples, device)
    cams = [vis.render_camera(s['bbox']) for s in samples]
    image = vis.as_uint8_image(load_img(img_path))
    rendered = vis.render_people(image, list(out['mesh_cam_render'].astype(np.float64)), model.mesh_face,
                                 [c[0] for c in cams], [c[1] for c in cams])
    return vis.save_image(out_path, rendered)


def run_quickstart_demo(checkpoint_path, data_root, out_dir, smpl_dir=None, gpu_ids='0', log=print):
    """The quickstart's last step, on the synthetic tree at ``data_root``.

    1. renders the meshes of the first synthetic 3DPW test image (test pipeline);
    2. writes that image's OpenPose detections as an OpenPose JSON file and runs the demo on it.
    ``smpl_dir`` defaults to ``cfg.smpl_model_dir``; ``cfg`` is left as it was.
    Returns ``{'pw3d_render', 'openpose_json', 'image', 'command', 'render', 'pose_2d', 'json', 'obj'}``.
    """
    from data.PW3D.PW3D import PW3D  # the demo itself needs no dataset code
    state = cfg.snapshot()
    try:
        cfg.data_dir = str(data_root)
        if smpl_dir is not None:
            cfg.smpl_model_dir = str(smpl_dir)
        cfg.crowd = False
        cfg.vis = False
        device = pick_device(gpu_ids, _warn)
        checkpoint = read_checkpoint(checkpoint_path)
        model = load_model(checkpoint, device, source=str(checkpoint_path))
        dataset = PW3D(None, 'test')
        first = dataset.datalist[0]
        img_path = first['img_path']
        out_dir = Path(out_dir)
        stem = Path(img_path).stem
        paths = {'image': img_path}
        paths['pw3d_render'] = render_test_image(
            model, dataset, img_path, out_dir / f"pw3d_{first['sequence']}_{stem}_render.jpg", device)

        with open(dataset.annotation_path()) as f:
            db = json.load(f)
        image_ids = {img['id'] for img in db['images']
                     if img['sequence'] == first['sequence'] and img['file_name'] == os.path.basename(img_path)}
        annotations = [a for a in db['annotations'] if a['image_id'] in image_ids]
        paths['openpose_json'] = openpose_json_from_annotations(annotations, out_dir / f'{stem}_keypoints.json')
        paths.update(run_demo(img_path, paths['openpose_json'], out_dir, model=model, device=device,
                              checkpoint_path=checkpoint_path, log=log))
        paths['command'] = (f"python main/demo.py --gpu {gpu_ids} --img {img_path} --pose {paths['openpose_json']} "
                            f"--model {checkpoint_path} --smpl_dir {cfg.smpl_model_dir} --data_dir {cfg.data_dir} "
                            f"--out {out_dir}")
        log(f"Quickstart demo: {paths['pw3d_render']} (3DPW test pipeline) and {paths['render']} "
            f"(demo on {paths['openpose_json']}).")
        return paths
    finally:
        cfg.restore(state)


def quickstart_step(result, args):
    """The last step of ``tool/quickstart.py``: :func:`run_quickstart_demo` on the
    run's checkpoint, written into ``<work_dir>/demo``; prints the paths and the demo command."""
    paths = run_quickstart_demo(result.checkpoint_path, result.data_dir, os.path.join(args.work_dir, 'demo'),
                                smpl_dir=result.smpl_dir, gpu_ids=args.gpu_ids)
    print(f"Demo overlay:  {paths['render']}\nDemo command:  {paths['command']}")
    return paths


# ----------------------------------------------------------------------------- CLI
def build_parser():
    parser = argparse.ArgumentParser(description='SMPL meshes for every person of an image from its 2D poses.')
    parser.add_argument('--gpu', type=gpu_ids_arg, dest='gpu_ids', default='0',
                        help="GPU id (default '0'); without CUDA the CPU is used")
    parser.add_argument('--img', required=True, help='input image')
    parser.add_argument('--pose', required=True,
                        help='2D poses: OpenPose JSON (BODY_25 / COCO-18) or COCO keypoint results (17 joints)')
    parser.add_argument('--model', required=True, help='checkpoint (snapshot_N.pth.tar or a released file)')
    parser.add_argument('--out', default=None, help='output folder (default <output_root>/demo)')
    parser.add_argument('--image_id', default=None, help='image_id to use from a COCO-results file of many images')
    parser.add_argument('--cfg', default='', help='YAML file overriding config options')
    parser.add_argument('--smpl_dir', default=None, help='folder of the SMPL pkl files (cfg.smpl_model_dir)')
    parser.add_argument('--data_dir', default=None, help='folder holding J_regressor_extra.npy (cfg.data_dir)')
    return parser


def main(argv=None):
    """Run the demo from command-line arguments; returns :func:`run_demo`'s dict."""
    args = build_parser().parse_args(argv)
    load_img(args.img)                              # unreadable image: fail before any model work
    read_pose_file(args.pose, args.img, args.image_id)  # malformed pose file: likewise
    checkpoint = read_checkpoint(args.model)
    cfg.set_args(args.gpu_ids, is_test=True)
    apply_checkpoint_config(checkpoint)
    if args.cfg:
        cfg.update(args.cfg)
    if args.smpl_dir:
        cfg.smpl_model_dir = args.smpl_dir
    if args.data_dir:
        cfg.data_dir = args.data_dir
    device = pick_device(cfg.gpu_ids, _warn)
    out_dir = args.out or os.path.join(cfg.output_root, 'demo')
    model = load_model(checkpoint, device, source=args.model)
    return run_demo(args.img, args.pose, out_dir, model=model, device=device, image_id=args.image_id,
                    checkpoint_path=args.model)


def run_cli(argv=None):
    """``main`` for the command line: expected failures end with their message (exit status 1)."""
    try:
        main(argv)
    except (FileNotFoundError, OSError, ValueError, ckpt_io.CheckpointError, SMPLFileError) as exc:
        sys.exit(f'ERROR: {exc}')


if __name__ == '__main__':
    run_cli()
