"""Synthetic 3DPW tree in the real on-disk format (docs/METHOD.md, "Data on disk").

Writes under ``root/PW3D``::

    data/3DPW_latest_{test,validation,train}.json
    data/3DPW_validation_crowd_hhrnet_result.json
    data/imageFiles/<sequence>/image_%05d.jpg
    rootnet_output/bbox_root_pw3d_output.json

Several gendered people per image, rendered with the gendered meshes.  Detections are the
projected SMPL-30 joints with pixel noise, low-confidence and undetected joints.  Special
cases exercise the loader:

* test split: one person whose only confident OpenPose joints coincide (the loader falls back
  to the annotation box; docs/METHOD.md, "Differences from the original");
* validation (crowd) split: kept sequences ``courtyard_hug_00``/``courtyard_dancing_00`` plus
  sequences the crowd filter must drop; one kept annotation without a HigherHRNet entry
  (OpenPose fallback).

Every annotation keeps at least one joint above the 0.05 threshold, as the loader requires
(the original loader raises otherwise); tests derive the all-below-threshold case by editing
a copy of the annotation file.
"""
from pathlib import Path

import numpy as np

from common.utils.joints import COCO17, OPENPOSE18
from common.utils.preprocessing import process_bbox
from tool.synthetic import common

SCORE_THRESHOLD = 0.05

PORTRAIT, LANDSCAPE = 'portrait', 'landscape'
# (width, height) of each orientation: 3DPW's real 1080x1920 / 1920x1080 (``full_size``) or a quarter of it.
IMAGE_SIZES = {False: {PORTRAIT: (270, 480), LANDSCAPE: (480, 270)},
               True: {PORTRAIT: (1080, 1920), LANDSCAPE: (1920, 1080)}}

# split -> list of (sequence, orientation, frames, people per frame)
SEQUENCES = {
    'test': (('downtown_arguing_00', PORTRAIT, 3, 2), ('office_phoneCall_00', LANDSCAPE, 2, 2)),
    'validation': (('courtyard_hug_00', LANDSCAPE, 2, 2), ('courtyard_dancing_00', PORTRAIT, 2, 2),
                   ('courtyard_jumpBench_01', PORTRAIT, 1, 2), ('downtown_walking_00', LANDSCAPE, 1, 1)),
    'train': (('courtyard_arguing_00', PORTRAIT, 1, 1),),
}
CROWD_SEQUENCES = ('courtyard_hug_00', 'courtyard_dancing_00')

# (split, sequence, frame, person) -> special case of the 2D input
COINCIDING_OPENPOSE = ('test', 'office_phoneCall_00', 0, 0)
MISSING_HHRNET = ('validation', 'courtyard_hug_00', 0, 1)


def _names_to_rows(names, smpl):
    return [smpl.joints_name.index(name) for name in names]


def coinciding_detection(det, rng):
    """Only two confident joints (nose, neck), at the very same pixel; the rest below threshold."""
    det = det.copy()
    det[:, 2] = rng.uniform(0.001, SCORE_THRESHOLD * 0.9, size=len(det))
    det[0, 2] = det[1, 2] = 0.8
    det[1, :2] = det[0, :2]
    return det


def _write_split(root, smpl, rng, split, full_size=False):
    """Render the images of one split; returns (json dict, hhrnet dict, rootnet list)."""
    images, annotations, hhrnet, rootnet = [], [], {}, []
    image_id, ann_id = 0, 0
    op_rows = _names_to_rows(OPENPOSE18.names, smpl)
    coco_rows = _names_to_rows(COCO17.names, smpl)
    regressor = np.asarray(smpl.joint_regressor, dtype=np.float64)
    for sequence, orientation, n_frames, n_people in SEQUENCES[split]:
        width, height = IMAGE_SIZES[full_size][orientation]
        # Alternating genders, so every split with two people has both gendered layers.
        first = common.random_gender(rng)
        genders = [(first, 'female' if first == 'male' else 'male')[person % 2] for person in range(n_people)]
        betas = [common.random_betas(rng) for _ in range(n_people)]
        focal, princpt = common.random_camera(rng, width, height)
        poses = np.stack([common.random_pose(rng, max_yaw=np.pi / 3) for _ in range(n_frames * n_people)])
        all_verts, all_joints = common.smpl_forward_by_gender(smpl, poses, np.tile(betas, (n_frames, 1)),
                                                              genders * n_frames)
        for frame in range(n_frames):
            file_name = f'image_{frame:05d}.jpg'
            meshes = []
            slots = (np.arange(n_people) + 0.5) / n_people
            for person in range(n_people):
                row = frame * n_people + person
                pose, gender = poses[row], genders[person]
                verts, joints24 = all_verts[row], all_joints[row]
                center = ((slots[person] + rng.uniform(-0.05, 0.05)) * width, rng.uniform(0.45, 0.55) * height)
                trans = common.place_person(verts, focal, princpt, width, height, rng,
                                            height_frac=(0.55, 0.8), center=center)
                # SMPL adds the translation to vertices and joints (smplpytorch semantics).
                verts, joints24 = verts + trans, joints24 + trans
                meshes.append(verts)
                joints30 = regressor @ verts
                uv30 = common.project(joints30, focal, princpt)
                uv24 = common.project(joints24, focal, princpt)
                bbox = common.enlarge_bbox(common.tight_bbox(uv24), 1.2)
                key = (split, sequence, frame, person)
                openpose = common.noisy_detection(uv30[op_rows], rng, noise_px=2.0, low_conf_frac=0.15,
                                                  conf_threshold=SCORE_THRESHOLD)
                if key == COINCIDING_OPENPOSE:
                    openpose = coinciding_detection(openpose, rng)
                annotations.append({
                    'id': ann_id, 'image_id': image_id, 'bbox': bbox,
                    'smpl_param': {'pose': pose, 'shape': betas[person], 'trans': trans, 'gender': gender},
                    'openpose_result': openpose, 'joint_img': uv24, 'joint_cam': joints24,
                    'person_id': person})
                if split == 'validation' and key != MISSING_HHRNET:
                    coco = common.noisy_detection(uv30[coco_rows], rng, noise_px=2.0, low_conf_frac=0.1,
                                                  conf_threshold=SCORE_THRESHOLD)
                    hhrnet[str(ann_id)] = {'coco_joints': coco, 'img_id': image_id}
                if split == 'test':
                    box = process_bbox(bbox, width, height, is_3dpw_test=True, aspect_ratio=1.0)
                    rootnet.append({'ann_id': ann_id, 'bbox': box.astype(np.float64),
                                    'root_cam': joints30[0] * 1000 + rng.normal(0, 30, size=3)})
                ann_id += 1
            img = common.render_people(width, height, meshes, smpl.face, focal, princpt, rng)
            common.write_jpeg(root / 'PW3D' / 'data' / 'imageFiles' / sequence / file_name, img)
            images.append({'id': image_id, 'file_name': file_name, 'sequence': sequence,
                           'width': width, 'height': height, 'frame_idx': frame,
                           'cam_param': {'focal': focal, 'princpt': princpt,
                                         'R': np.eye(3), 't': np.zeros(3)}})
            image_id += 1
    return {'images': images, 'annotations': annotations}, hhrnet, rootnet
def write(root, smpl, rng, full_size=False):
    """Write ``root/PW3D`` (test, validation, train splits, crowd HigherHRNet file, RootNet file).

    root: data root (Path); smpl: the SMPL wrapper; rng: np.random.Generator;
    full_size: images at 3DPW's real 1080x1920 / 1920x1080 instead of a quarter of it.
    """
    root = Path(root)
    data_dir = root / 'PW3D' / 'data'
    for split in ('test', 'validation', 'train'):
        db, hhrnet, rootnet = _write_split(root, smpl, rng, split, full_size)
        common.write_json(data_dir / f'3DPW_latest_{split}.json', db)
        if split == 'validation':
            common.write_json(data_dir / '3DPW_validation_crowd_hhrnet_result.json', hhrnet)
        if split == 'test':
            common.write_json(root / 'PW3D' / 'rootnet_output' / 'bbox_root_pw3d_output.json', rootnet)
