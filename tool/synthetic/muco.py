"""Synthetic MuCo-3DHP tree in the real on-disk format (docs/METHOD.md, "Data on disk").

A few composited images with two or three people each, in camera coordinates (mm).
MuCo-21 joints are taken by name from the mesh: the 14 joints MuCo shares with
H36M-17 from J_regressor_h36m_correct (as the fitting error compares them), Thorax
from the H36M 'Neck' (the thorax point), Spine, Head, hands and toes from SMPL-30.
SMPL fits (camera frame, metres) are keyed by str(annotation id); the closest person
of image 2 has no fit and that of image 3 a deliberately wrong one (fitting error
> 25 mm).  In images 0 and 4 the closest person overlaps another one (a swap
neighbour); in image 1 nobody overlaps it.
"""
from pathlib import Path

import numpy as np

from common.utils.joints import H36M17, MUCO21
from data.annotations import load_h36m_regressor
from tool.synthetic.common import (project, random_betas, random_camera, random_pose,
                                   render_people, smpl_forward, tight_bbox, write_jpeg, write_json, wrong_fit)

# MuCo joints that are not H36M joints of the same name: (source set, joint name there)
MUCO_FROM_OTHER = {'Thorax': ('h36m', 'Neck'), 'Spine': ('smpl', 'Spine'), 'Head': ('smpl', 'Head'),
                   'R_Hand': ('smpl', 'R_Hand'), 'L_Hand': ('smpl', 'L_Hand'),
                   'R_Toe': ('smpl', 'R_Toe'), 'L_Toe': ('smpl', 'L_Toe')}

# (width, height): MuCo-3DHP's real 2048x2048 composites (``full_size``) or a small stand-in.
IMAGE_SIZE = {False: (400, 320), True: (2048, 2048)}
# Per image: (file folder, ((horizontal centre as a fraction of the width, body height fraction), ...)).
# The largest person is usually the closest; the loader decides by the pelvis depth.
IMAGES = (
    ('augmented_set', ((0.42, 0.72), (0.58, 0.5), (0.85, 0.45))),
    ('augmented_set', ((0.22, 0.7), (0.78, 0.5))),
    ('unaugmented_set', ((0.5, 0.68), (0.25, 0.45))),
    ('unaugmented_set', ((0.7, 0.7), (0.3, 0.5))),
    ('augmented_set', ((0.45, 0.5), (0.6, 0.72))),
)
NO_FIT_IMAGE, WRONG_FIT_IMAGE = 2, 3


def muco_joints(smpl, regressor, verts):
    """(21, 3) MuCo-21 joints of one mesh (V,3), in the mesh's unit."""
    h36m = regressor @ verts
    smpl30 = smpl.joint_regressor.astype(np.float64) @ verts
    rows = []
    for name in MUCO21.names:
        source, other = MUCO_FROM_OTHER.get(name, ('h36m', name))
        rows.append(h36m[H36M17.names.index(other)] if source == 'h36m'
                    else smpl30[smpl.joints_name.index(other)])
    return np.stack(rows)


def place(verts, focal, princpt, center_x, height_frac, img_height):
    """Translation (3,) metres putting the body's box centre at column ``center_x``, mid-height,
    at the depth where it spans ``height_frac`` of the image height ``img_height`` (pixels)."""
    mins, maxs = verts.min(0), verts.max(0)
    depth = focal[1] * (maxs[1] - mins[1]) / (height_frac * img_height)
    target = np.array([(center_x - princpt[0]) / focal[0] * depth, (img_height * 0.5 - princpt[1]) / focal[1] * depth,
                       depth])
    return target - (mins + maxs) / 2


def write(root, smpl, rng, full_size=False):
    """Write ``root/MuCo/data/{MuCo-3DHP.json, smpl_param.json, augmented_set/, unaugmented_set/}``.

    root: data root (Path) already holding ``Human36M/J_regressor_h36m_correct.npy``;
    smpl: the SMPL wrapper; rng: np.random.Generator (everything follows from it);
    full_size: images at MuCo's real 2048x2048 instead of 400x320.
    """
    root = Path(root)
    width, height = IMAGE_SIZE[full_size]
    regressor = load_h36m_regressor(root)
    data_dir = root / 'MuCo' / 'data'
    images, annotations, fits = [], [], {}
    ann_id = 0
    for img_id, (folder, people) in enumerate(IMAGES):
        focal, princpt = random_camera(rng, width, height)
        poses = np.stack([random_pose(rng, max_yaw=np.pi / 3) for _ in people])
        betas = np.stack([random_betas(rng, scale=1.0) for _ in people])
        rest = smpl_forward(smpl, poses, betas)[0]
        trans = np.stack([place(rest[k], focal, princpt, cx * width, frac, height) for k, (cx, frac) in enumerate(people)])
        verts = rest + trans[:, None]
        joints_cam = np.stack([muco_joints(smpl, regressor, v) for v in verts]) * 1000
        closest = int(np.argmin(joints_cam[:, MUCO21.names.index('Pelvis'), 2]))
        for k, joint_cam in enumerate(joints_cam):
            annotations.append({'id': ann_id, 'image_id': img_id,
                                'bbox': tight_bbox(project(verts[k], focal, princpt), width, height),
                                'keypoints_cam': joint_cam, 'keypoints_img': project(joint_cam, focal, princpt)})
            skip_fit = k == closest and img_id == NO_FIT_IMAGE
            if not skip_fit:
                pose = wrong_fit(poses[k], rng) if (k == closest and img_id == WRONG_FIT_IMAGE) else poses[k]
                fits[str(ann_id)] = {'pose': pose, 'shape': betas[k], 'trans': trans[k]}
            ann_id += 1
        file_name = f'{folder}/img_{img_id:06d}.jpg'
        images.append({'id': img_id, 'file_name': file_name, 'width': width, 'height': height,
                       'f': focal, 'c': princpt})
        img = render_people(width, height, list(verts), smpl.face, focal, princpt, rng)
        write_jpeg(data_dir / file_name, img)
    write_json(data_dir / 'MuCo-3DHP.json', {'images': images, 'annotations': annotations})
    write_json(data_dir / 'smpl_param.json', fits)
