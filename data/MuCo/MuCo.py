"""MuCo-3DHP loader (DATA.md §1.4, §3.5, §3.7.3, §3.7.4); training split only.

Every composited image gives one sample: its person with the smallest root depth.
The other people of the image whose tight boxes overlap it (IoU >= 0.1) serve as
neighbours for the synthetic swap errors.

Expected layout under ``cfg.data_dir``::

    MuCo/data/MuCo-3DHP.json
    MuCo/data/smpl_param.json
    MuCo/data/<file_name>          (augmented_set/..., unaugmented_set/...)
    Human36M/J_regressor_h36m_correct.npy   (fitting error)
"""
import logging
import os.path as osp

import numpy as np

from common.utils.preprocessing import process_bbox
from common.utils.transforms import transform_joint_to_other_db
from data.Human36M.Human36M import H36M_JOINTS_NAME
from data.train_pipeline import (COCO17_JOINTS_NAME, FITTING_ERROR_THRESHOLD_MM, MocapTrainDataset, find_neighbours,
                                 fitting_error, parse_smpl_param, read_coco, read_json)
from main.config import cfg

logger = logging.getLogger(__name__)

MUCO_JOINTS_NAME = ('Head_top', 'Thorax', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow',
                    'L_Wrist', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Pelvis',
                    'Spine', 'Head', 'R_Hand', 'L_Hand', 'R_Toe', 'L_Toe')
MUCO_FLIP_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (17, 18), (19, 20))
MUCO_SKELETON = ((0, 16), (16, 1), (1, 15), (15, 14), (14, 8), (14, 11), (8, 9), (9, 10), (10, 19), (11, 12),
                 (12, 13), (13, 20), (1, 2), (2, 3), (3, 4), (4, 17), (1, 5), (5, 6), (6, 7), (7, 18))
MUCO_ROOT_IDX = 14
MUCO_COCO_SHARED_IDX = tuple(range(2, 14))
# H36M-17 rows that MuCo also has (all but Torso, Neck, Nose): the fitting-error joints.
H36M_MUCO_COMMON_IDX = tuple(i for i, name in enumerate(H36M_JOINTS_NAME) if name in MUCO_JOINTS_NAME)

LAYOUT_HINT = ("<cfg.data_dir>/MuCo/data/MuCo-3DHP.json (COCO-style), <cfg.data_dir>/MuCo/data/smpl_param.json "
               "and the images under <cfg.data_dir>/MuCo/data/ (DATA.md §1.1, §1.4; see the README's data section)")


def parse_person(ann, path):
    """(keypoints_cam (21, 3) mm, keypoints_img (21, 2) px, tight bbox (4,)) float32 of one annotation."""
    try:
        joint_cam = np.asarray(ann['keypoints_cam'], dtype=np.float32).reshape(len(MUCO_JOINTS_NAME), 3)
        joint_xy = np.asarray(ann['keypoints_img'], dtype=np.float32).reshape(len(MUCO_JOINTS_NAME), 2)
        bbox = np.asarray(ann['bbox'], dtype=np.float32).reshape(4)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: annotation id {ann.get('id')} needs keypoints_cam (21x3, mm), "
                         f"keypoints_img (21x2) and bbox[4] ({err}).") from err
    return joint_cam, joint_xy, bbox


class MuCo(MocapTrainDataset):
    """``MuCo(transform, 'train')``; any other split raises ``ValueError``.

    ``self[i]`` -> ``(inputs, targets, meta_info)`` as DATA.md §3.3.  Attributes:
    ``datalist``, ``h36m_regressor``, ``skipped_bbox_count``, ``skipped_empty_count``.
    """

    joints_name = MUCO_JOINTS_NAME
    flip_pairs = MUCO_FLIP_PAIRS
    skeleton = MUCO_SKELETON
    root_joint_idx = MUCO_ROOT_IDX
    fit_variant = 'camera_mm'
    synth_shared_idx = MUCO_COCO_SHARED_IDX

    def __init__(self, transform, data_split):
        if data_split != 'train':
            raise ValueError(f"MuCo has only a 'train' split (got '{data_split}').")
        self.data_dir = osp.join(cfg.data_dir, 'MuCo', 'data')
        self.skipped_bbox_count = 0
        self.skipped_empty_count = 0
        super().__init__(transform, data_split)

    def load_data(self):
        """The datalist of DATA.md §3.5: the closest person of each image, with its overlapping neighbours."""
        ann_path = osp.join(self.data_dir, 'MuCo-3DHP.json')
        fit_path = osp.join(self.data_dir, 'smpl_param.json')
        db = read_coco(ann_path, LAYOUT_HINT)
        fits = read_json(fit_path, LAYOUT_HINT)
        if not isinstance(fits, dict):
            raise ValueError(f"{fit_path}: expected an object keyed by str(annotation id).")
        datalist = []
        for img_id in db.imgs:
            img = db.imgs[img_id]
            anns = [db.anns[ann_id] for ann_id in db.getAnnIds(imgIds=[img_id])]
            if not anns:
                self.skipped_empty_count += 1
                continue
            people = [parse_person(ann, ann_path) for ann in anns]
            root_depths = np.array([joint_cam[MUCO_ROOT_IDX, 2] for joint_cam, _, _ in people])
            chosen = int(np.argmin(root_depths))  # first one on ties
            joint_cam, joint_xy, tight_bbox = people[chosen]
            try:
                img_shape = (int(img['height']), int(img['width']))
                cam_param = {'focal': np.asarray(img['f'], dtype=np.float32).reshape(2),
                             'princpt': np.asarray(img['c'], dtype=np.float32).reshape(2)}
            except (KeyError, ValueError, TypeError) as err:
                raise ValueError(f"{ann_path}: image id {img_id} needs width, height, f[2] and c[2] ({err}).") \
                    from err
            bbox = process_bbox(tight_bbox, img_shape[1], img_shape[0])
            if bbox is None:
                self.skipped_bbox_count += 1
                continue

            neighbours = find_neighbours([person[2] for person in people], chosen)
            ones = np.ones((len(MUCO_JOINTS_NAME), 1), dtype=np.float32)
            near_joints = [transform_joint_to_other_db(np.concatenate([people[k][1], ones], axis=1),
                                                       MUCO_JOINTS_NAME, COCO17_JOINTS_NAME) for k in neighbours]
            near_joints = (np.stack(near_joints) if near_joints
                           else np.zeros((1, len(COCO17_JOINTS_NAME), 3))).astype(np.float32)

            ann_id = anns[chosen]['id']
            fit = fits.get(str(ann_id))
            datalist.append({
                'img_path': osp.join(self.data_dir, img['file_name']),
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
                'root_joint_depth': float(joint_cam[MUCO_ROOT_IDX, 2]),
                'cam_param': cam_param,
                'num_overlap': len(neighbours),
                'near_joints': near_joints,
            })
        if self.skipped_bbox_count or self.skipped_empty_count:
            logger.warning('MuCo: skipped %d images whose closest person has a degenerate bbox and %d images '
                           'without annotations.', self.skipped_bbox_count, self.skipped_empty_count)
        return datalist

    def fit_is_valid(self, data, fit, gt, do_flip):
        """Fitting error (mm, §3.7.4) on the 14 joints MuCo shares with H36M-17 <= 25 mm."""
        gt_h36m = transform_joint_to_other_db(gt['joint_cam_mm'], MUCO_JOINTS_NAME, H36M_JOINTS_NAME)
        error = fitting_error(gt_h36m, fit['regressor_joints'], H36M_MUCO_COMMON_IDX)
        return error <= FITTING_ERROR_THRESHOLD_MM
