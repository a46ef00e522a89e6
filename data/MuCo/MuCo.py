"""MuCo-3DHP loader (docs/METHOD.md, "Data on disk", "Training samples"); training split only.

Every composited image gives one sample: its person with the smallest root depth.
The other people of the image whose tight boxes overlap it (IoU >= 0.1) serve as
neighbours for the synthetic swap errors.

Expected layout under ``options.data_dir``::

    MuCo/data/MuCo-3DHP.json
    MuCo/data/smpl_param.json
    MuCo/data/<file_name>          (augmented_set/..., unaugmented_set/...)
    Human36M/J_regressor_h36m_correct.npy   (fitting error)
"""
import logging
import os.path as osp
from functools import partial

import numpy as np

from common.utils.joints import COCO17, H36M17, MUCO21, transfer_joints
from common.utils.preprocessing import input_aspect_ratio, process_bbox
from data.annotations import (AnnotationError, coco_file, count_missing_fits, find_neighbours, finite_array,
                              h36m_regressor_file, image_folder, image_in, json_object_file, parse_smpl_param,
                              read_coco, read_json_object, require_fields)
from data.dataset import resolve_data_options
from data.smpl_targets import FITTING_ERROR_THRESHOLD_MM, fitting_error
from data.train_dataset import MocapTrainDataset

logger = logging.getLogger(__name__)

MUCO_COCO_SHARED_IDX = tuple(range(2, 14))
# H36M-17 rows that MuCo also has (all but Torso, Neck, Nose): the fitting-error joints.
H36M_MUCO_COMMON_IDX = tuple(i for i, name in enumerate(H36M17.names) if name in MUCO21.names)

LAYOUT_HINT = ("<data_dir>/MuCo/data/MuCo-3DHP.json (COCO-style), <data_dir>/MuCo/data/smpl_param.json "
               "and the images under <data_dir>/MuCo/data/ (docs/METHOD.md, \"Data on disk\"; see the README's "
               "data section)")

# Where the files come from: the data instructions of the 3DCrowdNet release
# (github.com/hongsukchoi/3DCrowdNet_RELEASE, assets/directory.md).
SOURCE = ("the MuCo-3DHP composited images and annotations parsed by the I2L-MeshNet/3DCrowdNet authors "
          "(https://drive.google.com/drive/folders/1dfhFa1kBHYKLTKuprNc7xixt3yyKEky5; SMPL fits: "
          "https://drive.google.com/drive/folders/1Wm1_6tn1u-_RE1iUlibIWfS75O79aJRz), linked from 3DCrowdNet's "
          "assets/directory.md")


def data_files(options, data_split='train'):
    """``{role: RequiredFile}`` of everything ``MuCo(transform, 'train', options)`` reads:
    'images' (folder), 'annotations', 'smpl_fits' and 'h36m_regressor'."""
    root = osp.join(options.data_dir, 'MuCo', 'data')
    return {
        'images': image_folder(root, 'MuCo-3DHP images (augmented_set/, unaugmented_set/)', SOURCE),
        'annotations': coco_file(osp.join(root, 'MuCo-3DHP.json'), 'MuCo-3DHP annotations (COCO-style JSON)',
                                 SOURCE, image_path=partial(image_in, root)),
        'smpl_fits': json_object_file(osp.join(root, 'smpl_param.json'), 'MuCo-3DHP SMPL fits (JSON)', SOURCE),
        'h36m_regressor': h36m_regressor_file(options.data_dir),
    }


def parse_person(ann, path):
    """(keypoints_cam (21, 3) mm, keypoints_img (21, 2) px, tight bbox (4,)) float32 of one annotation.

    A missing, malformed or non-finite field raises ``AnnotationError`` naming file and annotation.
    """
    record = f"annotation id {ann.get('id')}"
    joint_cam = finite_array(ann.get('keypoints_cam'), (len(MUCO21), 3), path, record, 'keypoints_cam')
    joint_xy = finite_array(ann.get('keypoints_img'), (len(MUCO21), 2), path, record, 'keypoints_img')
    return joint_cam, joint_xy, finite_array(ann.get('bbox'), (4,), path, record, 'bbox')


class MuCo(MocapTrainDataset):
    """``MuCo(transform, 'train', options=None)``; any other split raises ``ValueError``.

    ``self[i]`` -> ``(inputs, targets, meta_info)`` (docs/METHOD.md, "Training samples").  Attributes:
    ``datalist``, ``h36m_regressor``, ``skipped_bbox_count``, ``skipped_empty_count``.
    """

    joint_set = MUCO21
    skeleton = MUCO21.skeleton
    root_joint_idx = MUCO21.root
    fit_variant = 'camera_mm'
    synth_shared_idx = MUCO_COCO_SHARED_IDX
    data_files = staticmethod(data_files)

    def __init__(self, transform, data_split, options=None):
        if data_split != 'train':
            raise ValueError(f"MuCo has only a 'train' split (got '{data_split}').")
        options = resolve_data_options(options)
        self.files = data_files(options)
        self.data_dir = self.files['images'].path
        self.skipped_bbox_count = 0
        self.skipped_empty_count = 0
        super().__init__(transform, data_split, options)

    def load_data(self):
        """The datalist: the closest person of each image, with its overlapping neighbours."""
        ann_path = self.files['annotations'].path
        fit_path = self.files['smpl_fits'].path
        db = read_coco(ann_path, LAYOUT_HINT)
        fits = read_json_object(fit_path, LAYOUT_HINT)
        aspect_ratio = input_aspect_ratio(self.options.geometry)
        datalist = []
        for img_id in db.imgs:
            img = db.imgs[img_id]
            anns = [db.anns[ann_id] for ann_id in db.getAnnIds(imgIds=[img_id])]
            if not anns:
                self.skipped_empty_count += 1
                continue
            require_fields(img, ('file_name',), ann_path, 'image')
            people = [parse_person(ann, ann_path) for ann in anns]
            root_depths = np.array([joint_cam[MUCO21.root, 2] for joint_cam, _, _ in people])
            chosen = int(np.argmin(root_depths))  # first one on ties
            joint_cam, joint_xy, tight_bbox = people[chosen]
            try:
                img_shape = (int(img['height']), int(img['width']))
            except (KeyError, ValueError, TypeError) as err:
                raise AnnotationError(f"{ann_path}: image id {img_id} needs width and height ({err}).") from err
            cam_param = {'focal': finite_array(img.get('f'), (2,), ann_path, f'image id {img_id}', 'f'),
                         'princpt': finite_array(img.get('c'), (2,), ann_path, f'image id {img_id}', 'c')}
            bbox = process_bbox(tight_bbox, img_shape[1], img_shape[0], aspect_ratio=aspect_ratio)
            if bbox is None:
                self.skipped_bbox_count += 1
                continue

            neighbours = find_neighbours([person[2] for person in people], chosen)
            ones = np.ones((len(MUCO21), 1), dtype=np.float32)
            near_joints = [transfer_joints(np.concatenate([people[k][1], ones], axis=1), MUCO21.names, COCO17.names)
                           for k in neighbours]
            near_joints = (np.stack(near_joints) if near_joints
                           else np.zeros((1, len(COCO17), 3))).astype(np.float32)

            ann_id = anns[chosen]['id']
            fit = fits.get(str(ann_id))
            datalist.append({
                'img_path': image_in(self.data_dir, img),
                'img_id': img_id,
                'ann_id': ann_id,
                'img_shape': img_shape,
                'bbox': np.asarray(bbox, dtype=np.float32),
                'tight_bbox': tight_bbox,
                'joint_img': np.concatenate([joint_xy, joint_cam[:, 2:]], axis=1).astype(np.float32),
                'joint_cam': joint_cam,
                'joint_valid': ones,
                # Camera-frame fit (the translation in metres).
                'smpl_param': None if fit is None else parse_smpl_param(fit, fit_path, f'for annotation id {ann_id}'),
                'root_joint_depth': float(joint_cam[MUCO21.root, 2]),
                'cam_param': cam_param,
                'num_overlap': len(neighbours),
                'near_joints': near_joints,
            })
        count_missing_fits('MuCo', datalist, fit_path)
        if self.skipped_bbox_count or self.skipped_empty_count:
            logger.warning('MuCo: skipped %d images whose closest person has a degenerate bbox and %d images '
                           'without annotations.', self.skipped_bbox_count, self.skipped_empty_count)
        return datalist

    def fit_is_valid(self, data, fit, gt):
        """Fitting error (mm) on the 14 joints MuCo shares with H36M-17 <= 25 mm."""
        gt_h36m = transfer_joints(gt['joint_cam_mm'], MUCO21.names, H36M17.names)
        error = fitting_error(gt_h36m, fit['regressor_joints'], H36M_MUCO_COMMON_IDX)
        return error <= FITTING_ERROR_THRESHOLD_MM
