"""Synthetic MSCOCO tree in the real on-disk format (docs/METHOD.md, "Data on disk").

Writes under ``root/MSCOCO``::

    images/train2017/<12-digit id>.jpg, images/val2017/<12-digit id>.jpg
    annotations/person_keypoints_train2017.json, annotations/person_keypoints_val2017.json
    annotations/MSCOCO_train_SMPL_NeuralAnnot.json

Every image shows the mannequin people rendered with the image's camera; each
annotation's keypoints are the projections of the COCO-17 joints taken by name from the
SMPL-30 joints of the neutral mesh (v = 2 inside the image, a few dropped to [0, 0, 0]),
and its NeuralAnnot entry holds exactly the pose, shape, translation and camera of that
render.  The train file also exercises the loader's filters: a crowd annotation, one with
``num_keypoints = 0``, one with a zero-width box, one person without a fit, and one with
a shape beyond |beta| > 3.
"""
from pathlib import Path

import numpy as np

from common.utils.joints import COCO17
from tool.synthetic import common

COCO_KEYPOINT_NAMES = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
                       'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
                       'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
COCO_SKELETON_1BASED = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
                        (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))

# (width, height, number of annotated people) per image; people of one image overlap.  Keyed by
# ``full_size``: COCO's typical 640-pixel landscape and portrait sizes, or about half of them.
TRAIN_IMAGES = {False: ((320, 240, 2), (288, 384, 3), (384, 288, 2), (256, 320, 1)),
                True: ((640, 480, 2), (480, 640, 3), (640, 427, 2), (427, 640, 1))}
VAL_IMAGES = {False: ((320, 256, 2),), True: ((640, 480, 2),)}


def person_keypoints(uv, width, height, rng):
    """(17, 2) projected joints -> (17, 3) COCO ``[x, y, v]``: v = 2 inside the image, else [0, 0, 0].

    About 10% of the inside joints are also dropped (unlabelled, as in COCO).
    """
    return common.labelled_keypoints(uv, width, height, rng, visibility=2)


def make_people(smpl, count, width, height, focal, princpt, rng):
    """``count`` posed, overlapping people in one camera: list of dicts with pose, shape, trans, verts, joints30."""
    people = []
    centre_x = rng.uniform(0.4, 0.6) * width
    for index in range(count):
        pose, betas = common.random_pose(rng), common.random_betas(rng, 1.0)
        verts, _ = common.smpl_forward(smpl, pose[None], betas[None])
        # Neighbours stand side by side, about a third of a body apart, so their boxes overlap.
        offset = (index - (count - 1) / 2) * 0.22 * width
        centre = (centre_x + offset, rng.uniform(0.45, 0.55) * height)
        trans = common.place_person(verts[0], focal, princpt, width, height, rng, height_frac=(0.55, 0.75),
                                    center=centre)
        people.append({'pose': pose, 'shape': betas, 'trans': trans})
    return people


def pose_people(smpl, people):
    """Add camera-space ``verts`` (6890, 3) and SMPL-30 ``joints`` (30, 3), metres, to each person."""
    if not people:
        return people
    verts, _ = common.smpl_forward(smpl, [p['pose'] for p in people], [p['shape'] for p in people],
                                   [p['trans'] for p in people])
    regressor = np.asarray(smpl.joint_regressor, dtype=np.float64)
    for person, person_verts in zip(people, verts):
        person['verts'] = person_verts
        person['joints'] = regressor @ person_verts
    return people


def coco_uv(smpl, person, focal, princpt):
    """(17, 2) pixel projections of the person's COCO-17 joints (taken from SMPL-30 by name)."""
    idx = [smpl.joints_name.index(name) for name in COCO17.names]
    return common.project(person['joints'][idx], focal, princpt)


def annotation(ann_id, img_id, bbox, keypoints, iscrowd=0):
    """One COCO person annotation with the fields the real file has."""
    bbox = [round(float(v), 2) for v in bbox]
    return {'id': ann_id, 'image_id': img_id, 'category_id': 1, 'iscrowd': iscrowd,
            'bbox': bbox, 'area': round(bbox[2] * bbox[3], 2), 'segmentation': [],
            'num_keypoints': int((keypoints[:, 2] > 0).sum()), 'keypoints': keypoints.reshape(-1).tolist()}


def neuralannot_entry(person, focal, princpt):
    """The NeuralAnnot record of one rendered person: its SMPL parameters and the image's camera."""
    return {'smpl_param': {'pose': person['pose'], 'shape': person['shape'], 'trans': person['trans']},
            'cam_param': {'focal': focal, 'princpt': princpt}}


def write_split(root, split, image_specs, smpl, rng, first_img_id, first_ann_id, with_extras):
    """Render one split's images; return (COCO dict, NeuralAnnot dict)."""
    images, annotations, fits = [], [], {}
    ann_id = first_ann_id
    for index, (width, height, count) in enumerate(image_specs):
        img_id = first_img_id + index
        file_name = f'{img_id:012d}.jpg'
        focal, princpt = common.random_camera(rng, width, height)
        extras = with_extras and index == 0
        people = pose_people(smpl, make_people(smpl, count + (1 if extras else 0), width, height, focal,
                                               princpt, rng))
        if with_extras and index == 1:
            people[-1]['shape'] = people[-1]['shape'].copy()
            people[-1]['shape'][0] = 3.5   # sanitised to zeros by the loader (|beta| > 3)
            pose_people(smpl, people)
        image = common.render_people(width, height, [p['verts'] for p in people], smpl.face, focal, princpt, rng)
        common.write_jpeg(Path(root) / 'MSCOCO' / 'images' / f'{split}2017' / file_name, image)
        images.append({'id': img_id, 'file_name': file_name, 'width': width, 'height': height,
                       'license': 1, 'coco_url': '', 'date_captured': ''})

        for p_index, person in enumerate(people):
            bbox = common.tight_bbox(common.project(person['verts'], focal, princpt), width, height)
            keypoints = person_keypoints(coco_uv(smpl, person, focal, princpt), width, height, rng)
            crowd = extras and p_index == len(people) - 1
            annotations.append(annotation(ann_id, img_id, bbox, keypoints, iscrowd=int(crowd)))
            without_fit = with_extras and index == 2 and p_index == 0
            if split == 'train' and not crowd and not without_fit:
                fits[str(ann_id)] = neuralannot_entry(person, focal, princpt)
            ann_id += 1
        if extras:
            # Unlabelled person (num_keypoints = 0) and a zero-width box: both dropped by the loader.
            annotations.append(annotation(ann_id, img_id, [5.0, 5.0, 20.0, 30.0], np.zeros((17, 3))))
            annotations.append(annotation(ann_id + 1, img_id, [10.0, 10.0, 0.0, 40.0],
                                          person_keypoints(coco_uv(smpl, people[0], focal, princpt),
                                                           width, height, rng)))
            ann_id += 2
    coco = {'info': {'description': 'SGRE synthetic MSCOCO', 'version': '1.0'},
            'licenses': [{'id': 1, 'name': 'synthetic', 'url': ''}],
            'images': images, 'annotations': annotations,
            'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                            'keypoints': list(COCO_KEYPOINT_NAMES), 'skeleton': COCO_SKELETON_1BASED}]}
    return coco, fits


def write(root, smpl, rng, full_size=False):
    """Write ``root/MSCOCO`` (train and debug-val keypoint files, NeuralAnnot fits, JPEG images).

    root: data root (Path); smpl: the SMPL wrapper; rng: np.random.Generator;
    full_size: images at COCO's typical 640x480 / 480x640 / 640x427 instead of about half.
    ``J_regressor_coco_hip_smpl.npy`` is copied by the orchestrator.
    """
    ann_dir = Path(root) / 'MSCOCO' / 'annotations'
    train, fits = write_split(root, 'train', TRAIN_IMAGES[full_size], smpl, rng, first_img_id=1, first_ann_id=100,
                              with_extras=True)
    val, _ = write_split(root, 'val', VAL_IMAGES[full_size], smpl, rng, first_img_id=1001, first_ann_id=5000,
                         with_extras=False)
    common.write_json(ann_dir / 'person_keypoints_train2017.json', train)
    common.write_json(ann_dir / 'person_keypoints_val2017.json', val)
    common.write_json(ann_dir / 'MSCOCO_train_SMPL_NeuralAnnot.json', fits)
