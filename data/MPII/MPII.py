"""MPII Human Pose with NeuralAnnot SMPL fits (DATA.md §1.6, §3.6): a 2D training set.

As in the original, the split argument does not change the data (always ``train.json``);
it only switches augmentation off for splits other than 'train'.

Expected layout under ``cfg.data_dir``::

    MPII/data/annotations/train.json
    MPII/data/annotations/MPII_train_SMPL_NeuralAnnot.json
    MPII/data/<file_name>            (released file names start with 'images/')
"""
import logging
import os.path as osp

import numpy as np

from common.utils.preprocessing import process_bbox
from common.utils.transforms import transform_joint_to_other_db
from data.train_pipeline import (COCO18_JOINTS_NAME, MPII_FLIP_PAIRS, MPII_JOINTS_NAME, TrainDataset,
                                 attach_neighbours, parse_keypoints, parse_neuralannot, read_coco, read_json,
                                 require_fields)
from main.config import cfg

logger = logging.getLogger(__name__)

LAYOUT_HINT = ("<cfg.data_dir>/MPII/data/annotations/{train.json, MPII_train_SMPL_NeuralAnnot.json} and images "
               "under MPII/data/<file_name> (README 'Datasets', DATA.md §1.1)")


class MPII(TrainDataset):
    """``MPII(transform, data_split)``; every split reads the training annotations."""

    joints_name = MPII_JOINTS_NAME
    flip_pairs = MPII_FLIP_PAIRS
    is_3d = False
    fit_variant = 'NeuralAnnot'
    synth_joints_name = COCO18_JOINTS_NAME
    # Joints shared with COCO-18; Thorax, Neck and Head_top keep their clean positions.
    synth_shared_idx = (0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15)

    def __init__(self, transform, data_split):
        self.root = osp.join(cfg.data_dir, 'MPII', 'data')
        super().__init__(transform, data_split)

    def load_data(self):
        annot_path = osp.join(self.root, 'annotations', 'train.json')
        fit_path = osp.join(self.root, 'annotations', 'MPII_train_SMPL_NeuralAnnot.json')
        db = read_coco(annot_path, LAYOUT_HINT)
        fits = read_json(fit_path, LAYOUT_HINT)
        datalist, degenerate = [], 0
        for img_id, img in db.imgs.items():
            require_fields(img, ('file_name', 'width', 'height'), annot_path, 'image')
            width, height = img['width'], img['height']
            img_path = osp.join(self.root, img['file_name'])
            people = []
            for ann in db.imgToAnns.get(img_id, []):
                require_fields(ann, ('bbox', 'keypoints'), annot_path, 'annotation')
                bbox = process_bbox(ann['bbox'], width, height)
                if bbox is None:
                    degenerate += 1
                    continue
                joint_img = parse_keypoints(ann, len(MPII_JOINTS_NAME), annot_path)
                joint_valid = (joint_img[:, 2:] > 0).astype(np.float32)
                joint_img[:, 2] = joint_valid[:, 0]
                smpl_param = cam_param = None
                if str(ann['id']) in fits:
                    smpl_param, cam_param = parse_neuralannot(fits[str(ann['id'])], fit_path, ann['id'])
                people.append({
                    'img_path': img_path, 'img_id': img_id, 'ann_id': ann['id'], 'img_shape': (height, width),
                    'bbox': bbox, 'tight_bbox': np.asarray(ann['bbox'], dtype=np.float32),
                    'joint_img': joint_img, 'joint_valid': joint_valid,
                    'smpl_param': smpl_param, 'cam_param': cam_param,
                })
            # Neighbours are stored in COCO-18 (face joints zero) for the synthesiser.
            attach_neighbours(people, [transform_joint_to_other_db(person['joint_img'], MPII_JOINTS_NAME,
                                                                   COCO18_JOINTS_NAME) for person in people])
            datalist.extend(people)
        if degenerate:
            logger.warning('MPII: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    def get_test_sample(self, idx, data):
        """Any other split: the training pipeline without augmentation (the original's behaviour)."""
        return self.get_train_sample(idx, data, self.sample_rng(idx))
