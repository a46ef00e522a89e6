"""Synthetic Human3.6M tree in the real on-disk format (docs/METHOD.md, "Data on disk").

World frame z-up, millimetres for joints and camera translations, metres for the SMPL
translation.  The mocap joints are the H36M-17 joints regressed (J_regressor_h36m_correct)
from the world-frame mesh, and each image shows that mesh through its camera, so image
and annotation agree.  Per subject: one body shape, one action, four cameras around the
person.  What the loaders see:

* train (subjects 1, 5; 6, 7, 8 have empty files): frames 0 and 5 are kept, frame 3 is
  dropped by the every-5th-frame subsampling; cameras 1 and 4.  Subject 5's frame 0 has
  no fit and its frame 5 a deliberately wrong fit (fitting error > 25 mm).
* test (subjects 9, 11): camera 4 of frames 0 and 64 (subject 9) and 0 (subject 11);
  subject 9 also has frame 128 without a fit and frame 32 (both dropped), and camera 1.

Only images that a loader reads are rendered (other images are never opened).
"""
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from data.annotations import load_h36m_regressor
from tool.synthetic.common import (random_betas, random_camera, random_pose, render_people,
                                   smpl_forward, tight_bbox, write_jpeg, write_json, wrong_fit)

# (width, height): Human3.6M's real 1000x1002 (``full_size``) or about a third of it.
IMAGE_SIZE = {False: (320, 288), True: (1000, 1002)}
CAMERAS = (1, 4)
ACTION_IDX = {1: 2, 5: 7, 9: 11, 11: 15}
SUBACTION_IDX = 1
# subject -> frame_idx -> fit kind ('good', 'bad', None = no fit)
FRAMES = {
    1: {0: 'good', 3: 'good', 5: 'good'},
    5: {0: None, 3: 'good', 5: 'bad'},
    6: {}, 7: {}, 8: {},
    9: {0: 'good', 32: 'good', 64: 'good', 128: None},
    11: {0: 'good'},
}
EMPTY_DATA_AS_LISTS = (6, 8)   # the others without frames get '{}' (both forms are valid)
TRAIN_SUBJECTS, TEST_SUBJECTS = (1, 5, 6, 7, 8), (9, 11)


def is_kept(subject, frame, cam_idx, fit_kind):
    """Whether the loader keeps this image (only those are rendered)."""
    if subject in TRAIN_SUBJECTS:
        return frame % 5 == 0
    return frame % 64 == 0 and fit_kind is not None and cam_idx == 4


def world_root_pose(yaw):
    """Axis-angle of an upright SMPL body (template y-up) in the z-up world, turned by ``yaw``."""
    upright = Rotation.from_rotvec([np.pi / 2, 0.0, 0.0])
    return (Rotation.from_rotvec([0.0, 0.0, yaw]) * upright).as_rotvec()


def look_at_camera(center, target):
    """World->camera ``R`` (3,3) of an OpenCV camera at ``center`` looking at ``target`` (z-up world)."""
    forward = np.asarray(target, np.float64) - np.asarray(center, np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def subject_cameras(rng, width, height):
    """``{cam_idx: dict(R, t (mm), f, c)}`` for the four cameras of one subject (images ``width`` x ``height``)."""
    cameras = {}
    for cam_idx in (1, 2, 3, 4):
        focal, princpt = random_camera(rng, width, height, focal_range=(1.0, 1.1))
        azimuth = np.pi / 4 + (cam_idx - 1) * np.pi / 2 + rng.uniform(-0.2, 0.2)
        distance = rng.uniform(4.2, 4.6)
        center = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), rng.uniform(1.0, 1.5)])
        rotation = look_at_camera(center, [0.0, 0.0, 0.9])
        cameras[cam_idx] = {'R': rotation, 't': -rotation @ center * 1000, 'f': focal, 'c': princpt}
    return cameras


def world_fits(smpl, betas, count, rng):
    """``count`` standing people in the world with the feet on z = 0.

    Returns poses (count, 72), translations (count, 3) metres and the world meshes
    (count, 6890, 3) metres (SMPL's translation is a plain offset of the mesh).
    """
    poses = np.stack([random_pose(rng, max_yaw=0.0, upright=False) for _ in range(count)])
    poses[:, :3] = [world_root_pose(rng.uniform(-np.pi, np.pi)) for _ in range(count)]
    verts = smpl_forward(smpl, poses, np.repeat(betas[None], count, axis=0))[0]
    trans = np.stack([rng.uniform(-0.2, 0.2, size=count), rng.uniform(-0.2, 0.2, size=count),
                      -verts[:, :, 2].min(axis=1)], axis=1)
    return poses, trans, verts + trans[:, None]


def file_stem(subject, action, subaction, cam_idx):
    """The real release's folder/file naming, e.g. ``s_01_act_02_subact_01_ca_04``."""
    return f's_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{cam_idx:02d}'


def write_subject(root, smpl, regressor, subject, next_id, rng, full_size=False):
    """Write the four files (and kept images) of one subject; returns the next free image id."""
    width, height = IMAGE_SIZE[full_size]
    ann_dir = root / 'Human36M' / 'annotations'
    frames = FRAMES[subject]
    if not frames:
        data = {'images': [], 'annotations': []} if subject in EMPTY_DATA_AS_LISTS else {}
        write_json(ann_dir / f'Human36M_subject{subject}_data.json', data)
        for kind in ('camera', 'joint_3d', 'smpl_param'):
            write_json(ann_dir / f'Human36M_subject{subject}_{kind}.json', {})
        return next_id

    action = ACTION_IDX[subject]
    cameras = subject_cameras(rng, width, height)
    betas = random_betas(rng, scale=1.0)
    images, annotations, joints, fits = [], [], {}, {}
    poses, translations, meshes = world_fits(smpl, betas, len(frames), rng)
    for (frame, fit_kind), pose, trans, verts_world in zip(frames.items(), poses, translations, meshes):
        joints[str(frame)] = regressor @ verts_world * 1000
        if fit_kind is not None:
            fit_pose = pose if fit_kind == 'good' else wrong_fit(pose, rng)
            fits[str(frame)] = {'pose': fit_pose, 'shape': betas, 'trans': trans}
        for cam_idx in CAMERAS:
            camera = cameras[cam_idx]
            verts_cam = verts_world @ camera['R'].T + camera['t'] / 1000
            uv = verts_cam[:, :2] / verts_cam[:, 2:] * camera['f'] + camera['c']
            stem = file_stem(subject, action, SUBACTION_IDX, cam_idx)
            file_name = f'{stem}/{stem}_{frame + 1:06d}.jpg'
            images.append({'id': next_id, 'file_name': file_name, 'width': width, 'height': height,
                           'subject': subject, 'action_name': f'Action{action}', 'action_idx': action,
                           'subaction_idx': SUBACTION_IDX, 'cam_idx': cam_idx, 'frame_idx': frame})
            annotations.append({'id': next_id, 'image_id': next_id,
                                'bbox': tight_bbox(uv, width, height),
                                'keypoints_vis': [True] * regressor.shape[0]})
            if is_kept(subject, frame, cam_idx, fit_kind):
                img = render_people(width, height, [verts_cam], smpl.face, camera['f'], camera['c'], rng)
                write_jpeg(root / 'Human36M' / 'images' / file_name, img)
            next_id += 1

    key = str(action)
    write_json(ann_dir / f'Human36M_subject{subject}_data.json', {'images': images, 'annotations': annotations})
    write_json(ann_dir / f'Human36M_subject{subject}_camera.json', {str(k): v for k, v in cameras.items()})
    write_json(ann_dir / f'Human36M_subject{subject}_joint_3d.json', {key: {str(SUBACTION_IDX): joints}})
    write_json(ann_dir / f'Human36M_subject{subject}_smpl_param.json', {key: {str(SUBACTION_IDX): fits}})
    return next_id


def write(root, smpl, rng, full_size=False):
    """Write ``root/Human36M/{annotations,images}`` (four files for each of subjects 1,5,6,7,8,9,11).

    root: data root (Path) already holding ``Human36M/J_regressor_h36m_correct.npy``;
    smpl: the SMPL wrapper; rng: np.random.Generator (everything follows from it);
    full_size: images at the real 1000x1002 instead of 320x288.
    """
    root = Path(root)
    regressor = load_h36m_regressor(root)
    next_id = 0
    for subject in TRAIN_SUBJECTS + TEST_SUBJECTS:
        next_id = write_subject(root, smpl, regressor, subject, next_id, rng, full_size)
