"""Helpers shared by several test modules (fixtures stay in conftest.py)."""
import os
import signal
import subprocess

import pytest
import torch
from torch import nn

from main.config import cfg


def run_in_process(entry, argv, **kwargs):
    """Run an entry script's ``main(argv, **kwargs)`` in this process and return the run's
    ``cfg.output_dir``; ``cfg`` is left as it was before the call."""
    state = cfg.snapshot()
    try:
        entry(argv, **kwargs)
        return cfg.output_dir
    finally:
        cfg.restore(state)


def run_command(command, timeout, **kwargs):
    """``subprocess.run(command, capture_output=True, text=True, **kwargs)`` that fails the test
    if it has not finished after ``timeout`` seconds; the command and every process it started
    (its own process group) are then killed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f'{command} did not finish within {timeout} s:\n{(stdout + stderr)[-3000:]}')
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def per_joint_branches(pose_branch):
    """The 23 pose branches of a ``PoseBranches`` module as separate
    ``Linear-ReLU-Linear-ReLU-Linear`` modules (index j-1 for joint j), with copies of its
    values, written from the documented stacked layout (rows in ``joint_order``; first-layer
    weight = [graph | feature | parent columns])."""
    branches = nn.ModuleList()
    with torch.no_grad():
        for joint in range(1, len(pose_branch.joint_order) + 1):
            pos = list(pose_branch.joint_order).index(joint)
            first = torch.cat((pose_branch.graph_weight[pos], pose_branch.feature_weight[pos],
                               pose_branch.parent_weight[pos]), dim=1)
            layers = [nn.Linear(first.shape[1], first.shape[0]), nn.ReLU(),
                      nn.Linear(*pose_branch.weight2.shape[:0:-1]), nn.ReLU(),
                      nn.Linear(*pose_branch.weight3.shape[:0:-1])]
            values = [(first, pose_branch.bias1[pos]),
                      (pose_branch.weight2[pos], pose_branch.bias2[pos]),
                      (pose_branch.weight3[pos], pose_branch.bias3[pos])]
            for layer, (weight, bias) in zip(layers[::2], values):
                layer.to(weight.dtype).weight.copy_(weight)
                layer.bias.copy_(bias)
            branches.append(nn.Sequential(*layers).to(first.device))
    return branches
