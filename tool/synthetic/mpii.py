"""Synthetic MPII tree in the real on-disk format (docs/METHOD.md, "Data on disk").

Writes under ``root/MPII/data``::

    images/<9-digit name>.jpg
    annotations/train.json                       (COCO-style, 16 MPII keypoints)
    annotations/MPII_train_SMPL_NeuralAnnot.json

Keypoints are projections of the neutral mesh's SMPL-30 joints taken by name; MPII's
``Thorax`` (absent from SMPL-30) is the shoulder midpoint.  Joints outside the image and
a few random ones are unlabelled ``[0, 0, 0]``; labelled ones have v = 1.  One person has
no NeuralAnnot fit.
"""
from pathlib import Path

import numpy as np

from common.utils.joints import MPII16
from tool.synthetic import common
from tool.synthetic.mscoco import make_people, neuralannot_entry, pose_people

# (width, height, number of people) per image, keyed by ``full_size``: MPII's typical video-frame
# sizes (mostly 1280x720), or small stand-ins.
IMAGES = {False: ((320, 240, 2), (256, 320, 1), (384, 288, 3)),
          True: ((1280, 720, 2), (1280, 720, 1), (1920, 1080, 3))}


def mpii_joints(smpl, joints30):
    """(16, 3) MPII joints (metres) from SMPL-30 joints (30, 3); Thorax = shoulder midpoint."""
    names = smpl.joints_name
    rows = []
    for name in MPII16.names:
        if name == 'Thorax':
            rows.append((joints30[names.index('L_Shoulder')] + joints30[names.index('R_Shoulder')]) / 2)
        else:
            rows.append(joints30[names.index(name)])
    return np.stack(rows)


def write(root, smpl, rng, full_size=False):
    """Write ``root/MPII/data`` (train.json, NeuralAnnot fits, JPEG images).

    root: data root (Path); smpl: the SMPL wrapper; rng: np.random.Generator;
    full_size: images at MPII's typical 1280x720 (one 1920x1080) instead of small stand-ins.
    """
    data_dir = Path(root) / 'MPII' / 'data'
    images, annotations, fits = [], [], {}
    ann_id = 0
    for index, (width, height, count) in enumerate(IMAGES[full_size]):
        img_id = index
        file_name = f'images/{15601864 + 1000 * index:09d}.jpg'
        focal, princpt = common.random_camera(rng, width, height)
        people = pose_people(smpl, make_people(smpl, count, width, height, focal, princpt, rng))
        image = common.render_people(width, height, [p['verts'] for p in people], smpl.face, focal, princpt, rng)
        common.write_jpeg(data_dir / file_name, image)
        images.append({'id': img_id, 'file_name': file_name, 'width': width, 'height': height})
        for p_index, person in enumerate(people):
            uv = common.project(mpii_joints(smpl, person['joints']), focal, princpt)
            keypoints = common.labelled_keypoints(uv, width, height, rng, visibility=1)
            bbox = common.tight_bbox(common.project(person['verts'], focal, princpt), width, height)
            annotations.append({'id': ann_id, 'image_id': img_id, 'bbox': [round(float(v), 2) for v in bbox],
                                'keypoints': keypoints.reshape(-1).tolist()})
            if not (index == 2 and p_index == 1):
                fits[str(ann_id)] = neuralannot_entry(person, focal, princpt)
            ann_id += 1
    common.write_json(data_dir / 'annotations' / 'train.json', {'images': images, 'annotations': annotations})
    common.write_json(data_dir / 'annotations' / 'MPII_train_SMPL_NeuralAnnot.json', fits)
