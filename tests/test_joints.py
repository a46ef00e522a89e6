"""Joint conventions (common/utils/joints.py): the tables' internal consistency, moving rows
between sets by name, midpoints and row flips (docs/METHOD.md, "Joint conventions")."""
import numpy as np
import pytest

from common.utils import joints as J

ALL_SETS = (J.SMPL30, J.GRAPH15, J.H36M17, J.MUCO21, J.COCO17, J.COCO18, J.COCO19, J.MPII16, J.OPENPOSE18,
            J.OPENPOSE19, J.BODY25)


def mirrored_name(name):
    """'L_Hip' <-> 'R_Hip'; names without a side map to themselves."""
    if name[:2] == 'L_':
        return 'R_' + name[2:]
    if name[:2] == 'R_':
        return 'L_' + name[2:]
    return name


@pytest.mark.parametrize('joint_set', ALL_SETS, ids=lambda s: s.name)
def test_tables_are_consistent(joint_set):
    names = joint_set.names
    assert len(set(names)) == len(names)
    # Flip pairs, where a set defines them (the OpenPose layouts are only read), are exactly
    # its left/right twins.
    pairs = {frozenset(pair) for pair in joint_set.flip_pairs}
    twins = {frozenset((i, names.index(mirrored_name(n)))) for i, n in enumerate(names)
             if mirrored_name(n) != n and mirrored_name(n) in names}
    assert pairs == twins or (not pairs and joint_set.name in ('openpose18', 'openpose19', 'body25'))
    for a, b in joint_set.skeleton:
        assert 0 <= a < len(names) and 0 <= b < len(names) and a != b
    if joint_set.root is not None:
        assert names[joint_set.root] == 'Pelvis'


def test_derived_sets_extend_their_base():
    assert J.COCO18.names == J.COCO17.names + ('Pelvis',)
    assert J.COCO19.names == J.COCO17.names + ('Pelvis', 'Neck')
    assert J.OPENPOSE19.names == J.OPENPOSE18.names + ('Pelvis',)
    assert set(J.GRAPH15.names) <= set(J.SMPL30.names)
    assert J.SMPL_POSE_FLIP_PAIRS == ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21),
                                      (22, 23))
    assert all(J.H36M17.names[i] not in ('Pelvis', 'Torso', 'Nose') for i in J.H36M_EVAL_JOINTS)
    assert len(J.H36M_EVAL_JOINTS) == 14


def test_transfer_joints_by_name():
    src_name = ('Pelvis', 'Nose', 'L_Hip', 'R_Hip')
    dst_name = ('R_Hip', 'Neck', 'Pelvis', 'L_Hip')
    src = np.arange(12, dtype=np.float64).reshape(4, 3) + 1
    out = J.transfer_joints(src, src_name, dst_name)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, [src[3], [0, 0, 0], src[0], src[2]])  # Nose dropped, Neck zero
    valid = J.transfer_joints(np.ones((4, 1)), src_name, dst_name)
    np.testing.assert_array_equal(valid[:, 0], [1, 0, 1, 1])
    back = J.transfer_joints(out, dst_name, src_name)
    np.testing.assert_array_equal(back, [src[0], [0, 0, 0], src[2], src[3]])
    reg = J.transfer_joints(np.eye(4), src_name, dst_name)  # regressor-like rows
    assert reg.shape == (4, 4) and reg[0, 3] == 1 and not reg[1].any()
    # A destination name listed twice is filled at its first row only.
    twice = J.transfer_joints(src, src_name, ('L_Hip', 'L_Hip'))
    np.testing.assert_array_equal(twice, [src[2], [0, 0, 0]])


def test_openpose_to_smpl30_rows():
    pose = np.arange(19 * 3, dtype=np.float32).reshape(19, 3)
    smpl = J.transfer_joints(pose, J.OPENPOSE19.names, J.SMPL30.names)
    for k, name in enumerate(J.OPENPOSE19.names):
        np.testing.assert_array_equal(smpl[J.SMPL30.index(name)], pose[k])
    assert not smpl[J.SMPL30.index('Head_top')].any()


def test_midpoints_multiply_scores_and_keep_precision():
    names = ('L_Hip', 'R_Hip', 'L_Shoulder', 'R_Shoulder')
    joints = np.array([[10, 20, 0.5], [30, 40, 0.4], [0, 0, 1.0], [4, 8, 0.0]], np.float32)
    with_pelvis = J.add_pelvis(joints, names)
    np.testing.assert_allclose(with_pelvis[4], [20, 30, 0.2])
    assert with_pelvis.dtype == np.float32
    np.testing.assert_allclose(J.add_neck(joints, names)[4], [2, 4, 0.0])
    out, new_names = J.append_midpoint(joints.astype(np.float64), names, 'L_Hip', 'R_Shoulder', 'Mid')
    assert new_names == names + ('Mid',) and out.dtype == np.float64
    np.testing.assert_array_equal(out[4], [7.0, 14.0, 0.5 * 0.0])
    np.testing.assert_array_equal(J.add_pelvis(np.ones((4, 3), np.int64), names)[4], [1, 1, 1])


def test_flip_rows_swaps_pairs_and_copies():
    rows = np.arange(8).reshape(4, 2)
    flipped = J.flip_rows(rows, ((0, 3), (1, 2)))
    np.testing.assert_array_equal(flipped, rows[[3, 2, 1, 0]])
    np.testing.assert_array_equal(J.flip_rows(flipped, ((0, 3), (1, 2))), rows)
    assert rows[0, 0] == 0   # input untouched
