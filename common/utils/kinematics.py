"""Kinematic-tree operations: depth grouping of a joint tree and forward kinematics along it.

A tree is given as ``parents``, a sequence of J ints where ``parents[j]`` is the parent of
joint ``j``. Joint 0 is the root; its entry is ignored (SMPL stores 4294967295 there, other
tables -1). Every other joint must name a joint of the tree as parent, without cycles.

Every function here accepts NumPy arrays or torch tensors and runs the same code path for
both: basic slicing, one gather per tree depth, ``@`` products and a final concatenation.
Nothing is written in place, so torch autograd flows through every result. The products are
batched per tree depth (8 depths for SMPL's 24 joints), and each product is associated as in
a per-joint loop (``G_parent @ L_joint``), so results are bit-identical to that loop.

Frames: ``local_rot[..., j, :, :]`` rotates joint ``j``'s frame relative to its parent's
(root: relative to the body frame); ``global_rot`` is the accumulated rotation in the body
frame. Positions are in the unit of ``joints_rest`` (metres for SMPL).
"""
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

__all__ = ['TreePlan', 'tree_plan', 'tree_levels', 'global_rotations', 'relative_rotations',
           'forward_kinematics', 'skinning_transforms']


class TreePlan(NamedTuple):
    """Schedule for walking a tree depth by depth.

    ``order``: the joints sorted by depth (root first, ties by index). ``levels``: per depth
    >= 1, ``(start, end, parent_sel)``: the depth's joints are ``order[start:end]`` and
    ``parent_sel`` selects their parents inside the previous depth's block, as
    ``('slice', a, b)`` (a contiguous run; a run of length one broadcasts to every child) or
    ``('index', positions)``. ``inverse``: positions that undo ``order`` (None when ``order``
    is already 0..J-1, as for SMPL). ``parent_positions``: for each non-root joint in depth order,
    its parent's position in ``order``.
    """
    order: Tuple[int, ...]
    levels: Tuple[Tuple[int, int, tuple], ...]
    inverse: Optional[Tuple[int, ...]]
    parent_positions: Tuple[int, ...]


def _joint_depths(parents):
    """Depth of every joint (root 0); raises ValueError for a parent outside the tree or a cycle."""
    num = len(parents)
    depth = [None] * num
    depth[0] = 0
    for start in range(1, num):
        path = []
        joint = start
        while depth[joint] is None:
            parent = parents[joint]
            if not 0 <= parent < num or parent == joint or joint in path:
                raise ValueError(f'invalid kinematic tree: joint {joint} has parent {parent} '
                                 f'(parents={list(parents)})')
            path.append(joint)
            joint = parent
        for joint in reversed(path):
            depth[joint] = depth[parents[joint]] + 1
    return depth


@lru_cache(maxsize=32)
def _cached_plan(parents):
    depth = _joint_depths(parents)
    order = [0]
    levels = []
    previous = [0]
    for level in range(1, max(depth) + 1):
        joints = [j for j in range(len(parents)) if depth[j] == level]
        position_in_previous = {joint: i for i, joint in enumerate(previous)}
        positions = [position_in_previous[parents[j]] for j in joints]
        if len(set(positions)) == 1:
            parent_sel = ('slice', positions[0], positions[0] + 1)
        elif positions == list(range(positions[0], positions[0] + len(positions))):
            parent_sel = ('slice', positions[0], positions[0] + len(positions))
        else:
            parent_sel = ('index', tuple(positions))
        levels.append((len(order), len(order) + len(joints), parent_sel))
        order.extend(joints)
        previous = joints
    inverse = None
    if order != list(range(len(parents))):
        inverse = [0] * len(parents)
        for position, joint in enumerate(order):
            inverse[joint] = position
        inverse = tuple(inverse)
    position = {joint: i for i, joint in enumerate(order)}
    parent_positions = tuple(position[parents[j]] for j in order[1:])
    return TreePlan(tuple(order), tuple(levels), inverse, parent_positions)


def _parents_tuple(parents, num_joints=None):
    parents = tuple(int(p) for p in parents)
    if num_joints is not None and len(parents) != num_joints:
        raise ValueError(f'parents has {len(parents)} entries for {num_joints} joints')
    return parents


def tree_plan(parents):
    """The cached ``TreePlan`` of ``parents`` (validates the tree)."""
    return _cached_plan(_parents_tuple(parents))


def tree_levels(parents):
    """Joints grouped by depth, root level excluded.

    Returns a list with one ``(joints, joint_parents)`` pair of int lists per depth 1, 2, ...
    (the root, joint 0, is depth 0 and not listed); ``joint_parents[i]`` is the parent of
    ``joints[i]``. Every parent of a depth's joints is in the previous depth.
    """
    parents = _parents_tuple(parents)
    plan = _cached_plan(parents)
    levels = []
    for start, end, _ in plan.levels:
        joints = list(plan.order[start:end])
        levels.append((joints, [parents[j] for j in joints]))
    return levels


# ------------------------------------------------------------------ array-kind helpers
@lru_cache(maxsize=64)
def index_tensor(values, device):
    """Cached int64 index tensor on ``device`` (no host-to-device copy per call)."""
    return torch.tensor(values, dtype=torch.long, device=device)


def _take(x, positions, axis):
    """Entries ``positions`` of ``x`` along ``axis`` (a negative axis)."""
    if isinstance(x, torch.Tensor):
        return x.index_select(axis, index_tensor(tuple(positions), x.device))
    return np.take(x, positions, axis=axis)


def select_level(x, parent_sel, axis):
    """The rows of ``x`` along the negative ``axis`` that a ``TreePlan`` level's ``parent_sel``
    names: ``x`` itself or a view for a contiguous run, else a gather."""
    if parent_sel[0] == 'slice':
        if (parent_sel[1], parent_sel[2]) == (0, x.shape[axis]):
            return x  # every row: no slice, whose backward would zero-fill and copy the gradient
        return x[(Ellipsis, slice(parent_sel[1], parent_sel[2])) + (slice(None),) * (-axis - 1)]
    return _take(x, parent_sel[1], axis)


def _split(x, sizes, axis):
    """``x`` cut along the negative ``axis`` into consecutive blocks of ``sizes`` (a list)."""
    if isinstance(x, torch.Tensor):
        return list(torch.split(x, sizes, dim=axis))
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _concat(blocks, axis):
    if isinstance(blocks[0], torch.Tensor):
        return torch.cat(blocks, dim=axis)
    return np.concatenate(blocks, axis=axis)


def _swap_last_two(x):
    if isinstance(x, torch.Tensor):
        return x.transpose(-1, -2)
    return np.swapaxes(x, -1, -2)


def _einsum(x):
    return torch.einsum if isinstance(x, torch.Tensor) else np.einsum


# ------------------------------------------------------------------ tree operations
def global_rotations(local_rot, parents):
    """Parent-relative -> global rotations: ``G_0 = L_0``, ``G_j = G_parent(j) @ L_j``.

    local_rot (..., J, 3, 3) NumPy array or torch tensor; returns the same kind and shape.
    One batched product per tree depth. Under torch autocast the products run in the
    autocast dtype, as plain ``@`` does.
    """
    return forward_kinematics(local_rot, None, parents)[0]


def relative_rotations(global_rot, parents):
    """Global -> parent-relative rotations: ``L_0 = G_0``, ``L_j = G_parent(j)^T @ G_j``.

    global_rot (..., J, 3, 3) NumPy array or torch tensor (rotation matrices, so the
    transpose is the inverse); returns the same kind and shape. One batched product.
    """
    parents = _parents_tuple(parents, global_rot.shape[-3])
    _cached_plan(parents)  # validates the tree
    parent_rot = _take(global_rot, parents[1:], -3)
    children = _swap_last_two(parent_rot) @ global_rot[..., 1:, :, :]
    return _concat([global_rot[..., :1, :, :], children], -3)


def forward_kinematics(local_rot, joints_rest, parents):
    """Global rotations and joint positions of a posed tree.

    local_rot (..., J, 3, 3) parent-relative rotations; joints_rest (..., J, 3) rest-pose
    joint positions (or None for rotations only); NumPy arrays or torch tensors.
    Returns ``(global_rot (..., J, 3, 3), global_pos (..., J, 3))`` (``global_pos`` None
    without ``joints_rest``), where ``G_j = G_p @ L_j`` and
    ``p_j = G_p @ (rest_j - rest_p) + p_p`` for the parent ``p`` of ``j``; the root keeps
    ``L_0`` and ``rest_0``.

    The inputs are cut into their depth blocks by one split each (and all bone offsets
    ``rest_j - rest_p`` come from one subtraction), so autograd joins their gradients with one
    concatenation instead of a zero-filled copy per depth.
    """
    parents = _parents_tuple(parents, local_rot.shape[-3])
    plan = _cached_plan(parents)
    with_pos = joints_rest is not None
    if plan.inverse is not None:
        local_rot = _take(local_rot, plan.order, -3)
        if with_pos:
            joints_rest = _take(joints_rest, plan.order, -2)
    sizes = [1] + [end - start for start, end, _ in plan.levels]
    rot_blocks = _split(local_rot, sizes, -3)
    if with_pos:
        offsets = joints_rest[..., 1:, :] - _take(joints_rest, plan.parent_positions, -2)
        offset_blocks = _split(offsets[..., None], sizes[1:], -3)
        pos_blocks = [joints_rest[..., :1, :]]
    for level, (_, _, parent_sel) in enumerate(plan.levels, start=1):
        parent_rot = select_level(rot_blocks[level - 1], parent_sel, -3)
        if with_pos:
            moved = (parent_rot @ offset_blocks[level - 1])[..., 0]
            pos_blocks.append(moved + select_level(pos_blocks[-1], parent_sel, -2))
        rot_blocks[level] = parent_rot @ rot_blocks[level]
    global_rot = _concat(rot_blocks, -3)
    global_pos = _concat(pos_blocks, -2) if with_pos else None
    if plan.inverse is not None:
        global_rot = _take(global_rot, plan.inverse, -3)
        if with_pos:
            global_pos = _take(global_pos, plan.inverse, -2)
    return global_rot, global_pos


def skinning_transforms(global_rot, global_pos, joints_rest):
    """Per-joint rest -> posed maps as (..., J, 12) rows ``[R (9, row-major) | t (3)]``.

    A rest-pose point x moves to ``R x + t`` with ``R = global_rot`` and
    ``t = global_pos - R @ joints_rest``; linear blend skinning mixes these rows with the
    skinning weights. Inputs as returned by ``forward_kinematics`` (NumPy or torch).
    """
    trans = global_pos - _einsum(global_rot)('...kij,...kj->...ki', global_rot, joints_rest)
    flat_rot = global_rot.reshape(tuple(global_rot.shape[:-2]) + (9,))
    return _concat([flat_rot, trans], -1)
