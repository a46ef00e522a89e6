"""MSCOCO 2017 keypoints with NeuralAnnot SMPL fits (DATA.md §1.5, §3.6, §6.6).

``MSCOCO(transform, 'train')`` is a 2D training set; ``MSCOCO(transform, 'val')`` is the
original's 101-sample debug split (GT joints as input, no targets, no metrics).

Expected layout under ``cfg.data_dir``::

    MSCOCO/images/train2017/<file_name>, MSCOCO/images/val2017/<file_name>
    MSCOCO/annotations/person_keypoints_train2017.json
    MSCOCO/annotations/person_keypoints_val2017.json      ('val' split only)
    MSCOCO/annotations/MSCOCO_train_SMPL_NeuralAnnot.json ('train' split only)
"""
import logging
import os.path as osp

import numpy as np

from common.utils.preprocessing import process_bbox
from common.utils.transforms import transform_joint_to_other_db
from data.train_pipeline import (COCO18_JOINTS_NAME, COCO_FLIP_PAIRS, IMAGE_FIELDS, TrainDataset, add_pelvis,
                                 apply_affine, in_bounds_mask, load_crop, load_neuralannot_people, parse_keypoints,
                                 read_coco, read_json, require_fields, split_validity, to_heatmap_xy)
from main.config import cfg

logger = logging.getLogger(__name__)

VAL_SAMPLE_LIMIT = 101
ANNOTATION_FIELDS = ('bbox', 'keypoints', 'iscrowd', 'num_keypoints')
LAYOUT_HINT = ("<cfg.data_dir>/MSCOCO/annotations/{person_keypoints_train2017.json, person_keypoints_val2017.json, "
               "MSCOCO_train_SMPL_NeuralAnnot.json} and images under MSCOCO/images/{train2017,val2017}/ "
               "(README 'Datasets', DATA.md §1.1)")


def is_single_person_with_keypoints(ann):
    """The loaders skip crowd annotations and those without any labelled keypoint."""
    return not ann['iscrowd'] and ann['num_keypoints'] != 0


class MSCOCO(TrainDataset):
    """``MSCOCO(transform, data_split)`` with ``data_split`` in {'train', 'val'}."""

    joints_name = COCO18_JOINTS_NAME
    flip_pairs = COCO_FLIP_PAIRS
    is_3d = False
    fit_variant = 'NeuralAnnot'
    synth_joints_name = COCO18_JOINTS_NAME
    synth_shared_idx = tuple(range(17))   # the appended pelvis keeps the clean hip midpoint

    def __init__(self, transform, data_split):
        if data_split not in ('train', 'val'):
            raise ValueError(f"MSCOCO has the splits 'train' and 'val' (debug), not '{data_split}'.")
        self.root = osp.join(cfg.data_dir, 'MSCOCO')
        super().__init__(transform, data_split)

    # ------------------------------------------------------------------ loading
    def annotation_path(self, name):
        return osp.join(self.root, 'annotations', name)

    def load_data(self):
        if self.data_split == 'train':
            return self._load_train()
        return self._load_val()

    def _person_joints(self, ann, path):
        """COCO-17 keypoints + pelvis -> (joint_img (18, 3) with validity column, joint_valid (18, 1))."""
        return split_validity(add_pelvis(parse_keypoints(ann, 17, path)))

    def _load_train(self):
        annot_path = self.annotation_path('person_keypoints_train2017.json')
        fit_path = self.annotation_path('MSCOCO_train_SMPL_NeuralAnnot.json')
        datalist, degenerate = load_neuralannot_people(
            read_coco(annot_path, LAYOUT_HINT), annot_path, read_json(fit_path, LAYOUT_HINT), fit_path,
            osp.join(self.root, 'images', 'train2017'), ANNOTATION_FIELDS,
            lambda ann: self._person_joints(ann, annot_path), keep_annotation=is_single_person_with_keypoints)
        if degenerate:
            logger.warning('MSCOCO train: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    def _load_val(self):
        annot_path = self.annotation_path('person_keypoints_val2017.json')
        db = read_coco(annot_path, LAYOUT_HINT)
        datalist, degenerate = [], 0
        for ann in db.anns.values():
            require_fields(ann, ANNOTATION_FIELDS, annot_path, 'annotation')
            if not is_single_person_with_keypoints(ann):
                continue
            if ann['image_id'] not in db.imgs:
                raise ValueError(f"{annot_path}: annotation id {ann['id']} refers to the unknown image id "
                                 f"{ann['image_id']}.")
            img = db.imgs[ann['image_id']]
            require_fields(img, IMAGE_FIELDS, annot_path, 'image')
            bbox = process_bbox(ann['bbox'], img['width'], img['height'])
            if bbox is None:
                degenerate += 1
                continue
            joint_img, joint_valid = self._person_joints(ann, annot_path)
            datalist.append({
                'img_path': osp.join(self.root, 'images', 'val2017', img['file_name']),
                'img_id': ann['image_id'], 'ann_id': ann['id'], 'img_shape': (img['height'], img['width']),
                'bbox': bbox, 'tight_bbox': np.asarray(ann['bbox'], dtype=np.float32),
                'joint_img': joint_img, 'joint_valid': joint_valid,
            })
            if len(datalist) >= VAL_SAMPLE_LIMIT:
                break
        if degenerate:
            logger.warning('MSCOCO val: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    # ------------------------------------------------------------------ 'val' samples
    def get_test_sample(self, idx, data):
        """Debug sample: the crop, GT joints as input (30, 3) with validity in column 2, bbox."""
        img, img2bb, _, _, _ = load_crop(data['img_path'], data['bbox'], self.data_split, self.sample_rng(idx),
                                         self.transform)
        joints = data['joint_img'].copy()
        joints[:, :2] = apply_affine(joints[:, :2], img2bb)
        joints = to_heatmap_xy(joints)
        joints_mask = data['joint_valid'] * in_bounds_mask(joints, cfg.output_hm_shape)
        smpl_names = self.smpl.joints_name
        inputs = {
            'img': img,
            'joints': transform_joint_to_other_db(joints, self.joints_name, smpl_names),
            'joints_mask': transform_joint_to_other_db(joints_mask, self.joints_name, smpl_names),
        }
        return inputs, {}, {'bbox': np.asarray(data['bbox'], dtype=np.float32)}

    def evaluate(self, outs, cur_sample_idx):
        """The debug split has no metrics (the original only showed renders in a window)."""
        return {}

    def summarize(self, eval_result):
        return {}

    def print_eval_result(self, eval_result):
        print('MSCOCO val is a debug split without metrics.')
