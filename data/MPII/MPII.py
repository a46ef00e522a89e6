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

from common.utils.transforms import transform_joint_to_other_db
from data.train_pipeline import (COCO18_JOINTS_NAME, MPII_FLIP_PAIRS, MPII_JOINTS_NAME, TrainDataset,
                                 load_neuralannot_people, parse_keypoints, read_coco, read_json, split_validity)
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
        datalist, degenerate = load_neuralannot_people(
            read_coco(annot_path, LAYOUT_HINT), annot_path, read_json(fit_path, LAYOUT_HINT), fit_path, self.root,
            ('bbox', 'keypoints'),
            lambda ann: split_validity(parse_keypoints(ann, len(MPII_JOINTS_NAME), annot_path)),
            # Neighbours are stored in COCO-18 (face joints zero) for the synthesiser.
            lambda joint_img: transform_joint_to_other_db(joint_img, MPII_JOINTS_NAME, COCO18_JOINTS_NAME))
        if degenerate:
            logger.warning('MPII: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    def get_test_sample(self, idx, data):
        """Any other split: the training pipeline without augmentation (the original's behaviour)."""
        return self.get_train_sample(idx, data, self.sample_rng(idx))
