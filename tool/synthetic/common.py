"""Building blocks shared by the per-dataset synthetic-data writers (``tool/synthetic/<name>.py``).

Everything is deterministic from the ``np.random.Generator`` passed in: the same seed gives
byte-identical JSON files and images.  Units: SMPL parameters in radians / metres, camera
space x right, y down, z forward (OpenCV), pixels for image coordinates.

The SMPL template stands y-up; a person standing upright in an OpenCV camera therefore has a
root orientation of pi about the x axis (``upright_root_rotmat``).
"""
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

# Per-joint rotation ranges (radians) for the 23 body joints, so limbs bend a little but stay
# plausible: hips/knees/shoulders/elbows move most, spine/neck/head/hands/feet a little.
_SMALL, _MEDIUM, _LARGE = 0.12, 0.3, 0.4
_JOINT_ANGLE_SCALE = np.array([
    _MEDIUM, _MEDIUM, _SMALL,   # 1 L_Hip, 2 R_Hip, 3 Spine1
    _MEDIUM, _MEDIUM, _SMALL,   # 4 L_Knee, 5 R_Knee, 6 Spine2
    _SMALL, _SMALL, _SMALL,     # 7 L_Ankle, 8 R_Ankle, 9 Spine3
    _SMALL, _SMALL, _SMALL,     # 10 L_Foot, 11 R_Foot, 12 Neck
    _SMALL, _SMALL, _SMALL,     # 13 L_Collar, 14 R_Collar, 15 Head
    _LARGE, _LARGE,             # 16 L_Shoulder, 17 R_Shoulder
    _LARGE, _LARGE,             # 18 L_Elbow, 19 R_Elbow
    _SMALL, _SMALL, _SMALL, _SMALL,  # 20-23 wrists, hands
], dtype=np.float64)


# ----------------------------------------------------------------------------- SMPL parameters
def upright_root_rotmat(yaw=0.0):
    """(3,3) root rotation of a person standing upright in an OpenCV camera, turned by ``yaw`` rad.

    ``yaw`` turns the body about its own vertical axis (0: facing the camera).
    """
    flip = Rotation.from_rotvec([np.pi, 0.0, 0.0])
    turn = Rotation.from_rotvec([0.0, float(yaw), 0.0])
    return (flip * turn).as_matrix()


def random_pose(rng, max_yaw=np.pi / 3, upright=True, arms_down=True):
    """(72,) float64 axis-angle SMPL pose with small joint angles.

    The root is upright in an OpenCV camera (``upright=True``) with a yaw drawn uniformly in
    ``[-max_yaw, max_yaw]``; body joint rotations are uniform within per-joint ranges.
    ``arms_down`` lowers the T-pose arms by 0.9-1.3 rad (a relaxed A-pose, narrower boxes).
    """
    pose = np.zeros((24, 3), dtype=np.float64)
    yaw = rng.uniform(-max_yaw, max_yaw) if max_yaw > 0 else 0.0
    root = upright_root_rotmat(yaw) if upright else Rotation.from_rotvec([0.0, yaw, 0.0]).as_matrix()
    pose[0] = Rotation.from_matrix(root).as_rotvec()
    pose[1:] = rng.uniform(-1.0, 1.0, size=(23, 3)) * _JOINT_ANGLE_SCALE[:, None]
    if arms_down:
        # The template's left arm points along +x, the right along -x (y up): rotating the
        # shoulders about z by -a (left) and +a (right) lowers both.
        lower = rng.uniform(0.9, 1.3, size=2)
        pose[16, 2] -= lower[0]
        pose[17, 2] += lower[1]
    return pose.reshape(72)


def random_betas(rng, scale=1.0):
    """(10,) float64 shape parameters uniform in ``[-scale, scale]``."""
    return rng.uniform(-scale, scale, size=10)


def random_gender(rng):
    """'male' or 'female' with equal probability."""
    return 'male' if rng.random() < 0.5 else 'female'


def smpl_forward(smpl, poses, betas, trans=None, gender='neutral'):
    """Run the ``gender`` layer of the SMPL wrapper on CPU (float32, as the loaders do).

    poses (N,72), betas (N,10), trans (N,3) metres (None: zeros).
    Returns vertices (N,6890,3) and joints (N,24,3) as float64 NumPy arrays, metres.
    """
    poses = np.asarray(poses, dtype=np.float32).reshape(-1, 72)
    betas = np.asarray(betas, dtype=np.float32).reshape(-1, 10)
    trans = np.zeros((len(poses), 3), np.float32) if trans is None else \
        np.asarray(trans, dtype=np.float32).reshape(-1, 3)
    with torch.no_grad():
        verts, joints = smpl.layer[gender](torch.from_numpy(poses), torch.from_numpy(betas),
                                            torch.from_numpy(trans))
    return verts.numpy().astype(np.float64), joints.numpy().astype(np.float64)


def smpl_forward_by_gender(smpl, poses, betas, genders):
    """``smpl_forward`` for people of mixed gender: one batched call per gender.

    poses (N,72), betas (N,10), genders: N strings.  Returns vertices (N,6890,3) and joints
    (N,24,3) float64 (zero translation), in input order.
    """
    poses, betas = np.asarray(poses, dtype=np.float64), np.asarray(betas, dtype=np.float64)
    verts = np.zeros((len(poses), 6890, 3))
    joints = np.zeros((len(poses), 24, 3))
    genders = np.asarray(genders)
    for gender in sorted(set(genders.tolist())):
        pick = np.flatnonzero(genders == gender)
        verts[pick], joints[pick] = smpl_forward(smpl, poses[pick], betas[pick], gender=gender)
    return verts, joints


def wrong_fit(pose, rng, joints=(1, 2, 4, 5, 16, 17, 18, 19), bend=0.7):
    """A copy of ``pose`` (72,) with ``joints`` (default hips, knees, shoulders, elbows) bent by
    +-``bend`` rad about each axis (random signs): a fit whose fitting error is well above 25 mm."""
    bad = np.asarray(pose).reshape(24, 3).copy()
    for joint in joints:
        bad[joint] += rng.choice([-1.0, 1.0], size=3) * bend
    return bad.reshape(72)


# ----------------------------------------------------------------------------- camera and placement
def random_camera(rng, width, height, focal_range=(0.9, 1.3)):
    """Pinhole camera for a ``width`` x ``height`` image.

    Returns focal ``(fx, fy)`` (pixels, proportional to the longer image side, fx ~= fy) and
    principal point ``(cx, cy)`` near the image centre.
    """
    base = max(width, height) * rng.uniform(*focal_range)
    focal = np.array([base, base * rng.uniform(0.99, 1.01)])
    princpt = np.array([width / 2 + rng.uniform(-0.02, 0.02) * width,
                        height / 2 + rng.uniform(-0.02, 0.02) * height])
    return focal, princpt


def project(points, focal, princpt):
    """Pinhole projection: points (..., 3) camera space -> (..., 2) pixels."""
    points = np.asarray(points, dtype=np.float64)
    focal, princpt = np.asarray(focal, dtype=np.float64), np.asarray(princpt, dtype=np.float64)
    return points[..., :2] / points[..., 2:3] * focal + princpt


def place_person(verts, focal, princpt, width, height, rng, height_frac=(0.45, 0.75), center=None):
    """Translation (3,) metres that puts a mesh into the image.

    verts (V,3): the mesh with zero translation.  The depth is chosen so that the body's
    vertical extent covers ``height_frac`` (uniform range) of the image height; the body centre
    lands at pixel ``center`` (default: uniform in the middle half of the image).  The whole
    body then lies inside the image whenever it fits at that size.
    """
    verts = np.asarray(verts, dtype=np.float64)
    mins, maxs = verts.min(0), verts.max(0)
    body_height = maxs[1] - mins[1]
    frac = rng.uniform(*height_frac)
    depth = focal[1] * body_height / (frac * height)
    if center is None:
        center = (rng.uniform(0.25, 0.75) * width, rng.uniform(0.35, 0.65) * height)
    mid = (mins + maxs) / 2
    # Put the mesh's bounding-box centre on the ray through `center` at `depth`.
    target = np.array([(center[0] - princpt[0]) / focal[0] * depth,
                       (center[1] - princpt[1]) / focal[1] * depth, depth])
    trans = target - mid
    uv = project(verts + trans, focal, princpt)
    # Shift horizontally/vertically (in camera space, at the body's depth) if a side sticks out.
    shift = np.zeros(2)
    for axis, size in ((0, width), (1, height)):
        low, high = uv[:, axis].min(), uv[:, axis].max()
        if high - low < size - 2:
            if low < 1:
                shift[axis] = 1 - low
            elif high > size - 2:
                shift[axis] = size - 2 - high
    trans[:2] += shift / focal * depth
    return trans


def tight_bbox(uv, width=None, height=None):
    """[x, y, w, h] (float64) around pixel points uv (N,2), clipped to the image when given."""
    uv = np.asarray(uv, dtype=np.float64)
    x0, y0 = uv.min(0)
    x1, y1 = uv.max(0)
    if width is not None:
        x0, x1 = np.clip([x0, x1], 0, width - 1)
    if height is not None:
        y0, y1 = np.clip([y0, y1], 0, height - 1)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def enlarge_bbox(bbox, factor=1.2):
    """[x, y, w, h] scaled by ``factor`` about its centre."""
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    return np.array([cx - w * factor / 2, cy - h * factor / 2, w * factor, h * factor])


# ----------------------------------------------------------------------------- 2D keypoints
def labelled_keypoints(uv, width, height, rng, visibility, drop_prob=0.1):
    """(J, 2) projected joints -> (J, 3) ``[x, y, v]`` annotation keypoints.

    Joints inside the image get ``v = visibility`` (COCO: 2, MPII: 1) and coordinates
    rounded to 0.01 px; the others, and about ``drop_prob`` of the inside ones (one
    ``rng.random(J)`` draw), are unlabelled ``[0, 0, 0]``.
    """
    kps = np.zeros((len(uv), 3))
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= height - 1)
    keep = inside & (rng.random(len(uv)) >= drop_prob)
    kps[keep, :2] = np.round(uv[keep], 2)
    kps[keep, 2] = visibility
    return kps


# ----------------------------------------------------------------------------- 2D detections
def noisy_detection(uv, rng, noise_px=3.0, low_conf_frac=0.15, conf_threshold=0.1):
    """Detector-style 2D joints: uv (J,2) pixels -> (J,3) ``[x, y, confidence]`` float64.

    Adds Gaussian noise of ``noise_px`` pixels; about ``low_conf_frac`` of the joints get a
    confidence below ``conf_threshold`` (some of them zeroed to ``[0,0,0]`` as undetected).
    """
    uv = np.asarray(uv, dtype=np.float64)
    det = np.zeros((len(uv), 3))
    det[:, :2] = uv + rng.normal(0.0, noise_px, size=uv.shape)
    det[:, 2] = rng.uniform(0.4, 0.98, size=len(uv))
    low = rng.random(len(uv)) < low_conf_frac
    det[low, 2] = rng.uniform(0.0, conf_threshold * 0.9, size=int(low.sum()))
    undetected = low & (rng.random(len(uv)) < 0.5)
    det[undetected] = 0.0
    return det


# ----------------------------------------------------------------------------- images
def textured_background(width, height, rng):
    """(height, width, 3) uint8 RGB random texture: smooth colour blobs plus fine noise."""
    coarse = rng.uniform(40, 215, size=(max(2, height // 64), max(2, width // 64), 3))
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0.0, 12.0, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def person_colors(count, rng):
    """(count, 3) float64 RGB mesh colours in [0.35, 0.95], one per person."""
    return rng.uniform(0.35, 0.95, size=(count, 3))


def render_people(width, height, meshes, faces, focal, princpt, rng):
    """RGB uint8 image (height, width, 3): the meshes rendered over a random textured background.

    meshes: list of (6890,3) camera-space vertices in metres; faces (F,3) int; focal (fx, fy),
    princpt (cx, cy) in pixels.  Uses the project's headless z-buffer renderer.
    """
    from common.utils.render import render_meshes  # the generator is the renderer's only tool-side user
    background = textured_background(width, height, rng)
    colors = person_colors(len(meshes), rng)
    if not meshes:
        return background
    return render_meshes(background, [np.asarray(m, dtype=np.float64) for m in meshes],
                         np.asarray(faces), tuple(float(v) for v in focal), tuple(float(v) for v in princpt),
                         colors=[tuple(c) for c in colors])


def write_jpeg(path, img, quality=92):
    """Write an RGB uint8 image as JPEG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not write image '{path}'")


# ----------------------------------------------------------------------------- JSON
def to_json(value, decimals=6):
    """Recursively turn NumPy arrays/scalars into plain lists/floats rounded to ``decimals``."""
    if isinstance(value, dict):
        return {str(k): to_json(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, decimals) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist(), decimals)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), decimals)
    return value


def write_json(path, obj, decimals=6):
    """Write ``obj`` (NumPy allowed) as compact JSON with fixed formatting (byte-reproducible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as fh:
        json.dump(to_json(obj, decimals), fh, separators=(',', ':'))
