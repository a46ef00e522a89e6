"""Stacked parameter storage with the checkpoint's per-item layout.

Some heads hold many small layers of identical shape: one ``Linear`` + ``BatchNorm1d`` per
graph vertex, one small MLP per SMPL joint.  Those modules store each kind of parameter of all
items as one stacked tensor, so that a forward pass is one batched product instead of one call
per item.  The checkpoints keep the per-item layout of the original model, so released files
load and our files stay readable by the original code:

* the weights, through each module's public state-dict hooks;
* the optimizer state (e.g. Adam's moments), through ``canonical_optimizer_state`` and
  ``stacked_optimizer_state`` below: a snapshot's ``optimizer`` entry lists one state per
  per-item parameter, in the order the original model's optimizer did.

A module with stacked storage implements two methods, the single definition of its layout:

``canonical_items(tensors)``
    ``tensors``: {own parameter name (as ``named_parameters()`` gives it): tensor shaped like
    that parameter} -- the parameters, their gradients or optimizer moments.  Returns the
    per-item tensors as a list of (per-item name relative to the module, tensor), in the
    original model's parameter order.
``stacked_items(canonical)``
    The inverse: {per-item name: tensor} -> {own parameter name: tensor}.
"""
import torch


def is_stacked(module):
    """Whether ``module`` stores per-item parameters stacked (implements the two methods)."""
    return callable(getattr(module, 'canonical_items', None)) and callable(getattr(module, 'stacked_items', None))


def stacked_modules(model):
    """The outermost stacked modules inside ``model``, in ``model.modules()`` order."""
    found, covered = [], set()
    for module in model.modules():
        if id(module) in covered or not is_stacked(module):
            continue
        found.append(module)
        covered.update(id(sub) for sub in module.modules())
    return found


def _owners(model):
    """{id(parameter): stacked module owning it}."""
    return {id(param): module for module in stacked_modules(model) for param in module.parameters()}


def _follows_layout(value):
    """Whether an optimizer-state value is shaped like its parameter (a moment) rather than
    shared by all items (Adam's scalar ``step``, hyper-parameters)."""
    return torch.is_tensor(value) and value.dim() > 0


def _copy(value):
    return value.clone() if torch.is_tensor(value) else value


def _split_state(module, names, states):
    """Per-item optimizer states of one stacked module from the states of its own parameters
    ``names`` (one dict per parameter, same keys); returns per-item dicts in per-item order."""
    per_item = None
    for key in states[0]:
        values = {name: state[key] for name, state in zip(names, states)}
        if _follows_layout(values[names[0]]):
            pieces = [tensor.clone() for _, tensor in module.canonical_items(values)]
        else:
            pieces = [_copy(values[names[0]]) for _ in range(_item_count(module))]
        per_item = per_item or [dict() for _ in pieces]
        for item, piece in zip(per_item, pieces):
            item[key] = piece
    return per_item


def _merge_state(module, names, per_item_states):
    """Inverse of ``_split_state``: one state dict per own parameter, in ``names`` order."""
    item_names = [name for name, _ in module.canonical_items(dict(module.named_parameters()))]
    merged = [dict() for _ in names]
    for key in per_item_states[0]:
        values = {item: state[key] for item, state in zip(item_names, per_item_states)}
        if _follows_layout(values[item_names[0]]):
            stacked = module.stacked_items(values)
            pieces = [stacked[name].clone() for name in names]
        else:
            pieces = [_copy(values[item_names[0]]) for _ in names]
        for state, piece in zip(merged, pieces):
            state[key] = piece
    return merged


def _copied(state):
    """A copy of one parameter's optimizer state: ``load_state_dict`` keeps tensors it need not
    convert, so a state shared with another optimizer would be updated by both."""
    return {key: _copy(value) for key, value in state.items()}


def _walk_groups(model, optimizer):
    """Per parameter group, the live parameters cut into runs: (stacked module or None, params)."""
    owners = _owners(model)
    for group in optimizer.param_groups:
        runs, params, i = [], group['params'], 0
        while i < len(params):
            module = owners.get(id(params[i]))
            if module is None:
                runs.append((None, [params[i]]))
                i += 1
                continue
            own = [param for _, param in module.named_parameters()]
            if [id(p) for p in params[i:i + len(own)]] != [id(p) for p in own]:
                raise ValueError(f'the optimizer holds the parameters of {type(module).__name__} '
                                 'apart or in another order than the module')
            runs.append((module, own))
            i += len(own)
        yield group, runs


def _item_count(module):
    """How many per-item parameters a stacked module stands for."""
    return len(module.canonical_items(dict(module.named_parameters())))


def _relayout(model, optimizer, saved, to_items):
    """Re-index an optimizer state dict between the stacked and the per-item layouts.

    saved: a state dict in the source layout whose groups match ``optimizer.param_groups``.
    to_items: True for stacked -> per-item, False for per-item -> stacked. Plain parameters keep
    one state each; a stacked module's run of states is split or merged. Returns a new state dict
    (tensors copied, so it shares nothing with ``saved``).
    """
    if len(saved['param_groups']) != len(optimizer.param_groups):
        raise ValueError(f"the saved optimizer state has {len(saved['param_groups'])} parameter groups, "
                         f'the optimizer {len(optimizer.param_groups)}')
    state, groups, new_index = {}, [], 0
    for (_, runs), saved_group in zip(_walk_groups(model, optimizer), saved['param_groups']):
        saved_ids, position, ids = list(saved_group['params']), 0, []
        for module, params in runs:
            stacked_count = len(params)
            item_count = stacked_count if module is None else _item_count(module)
            count_in, count_out = (stacked_count, item_count) if to_items else (item_count, stacked_count)
            if position + count_in > len(saved_ids):
                raise ValueError(f'a saved optimizer group lists {len(saved_ids)} parameters, '
                                 'fewer than the model has in that group')
            states_in = [saved['state'].get(i) for i in saved_ids[position:position + count_in]]
            position += count_in
            if all(entry is None for entry in states_in):
                states_out = [None] * count_out
            elif any(entry is None for entry in states_in):
                raise ValueError('the saved optimizer state covers only some parameters of '
                                 f'{type(module).__name__}')
            elif module is None:
                states_out = [_copied(states_in[0])]
            else:
                names = [name for name, _ in module.named_parameters()]
                convert = _split_state if to_items else _merge_state
                states_out = convert(module, names, states_in)
            for entry in states_out:
                if entry is not None:
                    state[new_index] = entry
                ids.append(new_index)
                new_index += 1
        if position != len(saved_ids):
            raise ValueError(f'a saved optimizer group lists {len(saved_ids)} parameters, the model '
                             f'has {position} in that group')
        groups.append({**saved_group, 'params': ids})
    return {'state': state, 'param_groups': groups}


def canonical_optimizer_state(model, optimizer):
    """``optimizer.state_dict()`` in the per-item layout (what snapshots store).

    model: the module whose parameters ``optimizer`` holds (a DataParallel/DDP wrapper is fine).
    """
    return _relayout(model, optimizer, optimizer.state_dict(), to_items=True)


def stacked_optimizer_state(model, optimizer, canonical_state):
    """A per-item optimizer state dict (a snapshot's, a released file's) for ``optimizer``.

    Returns a state dict for ``optimizer.load_state_dict``.  Raises ValueError when the saved
    groups or parameter counts do not fit the model.
    """
    return _relayout(model, optimizer, canonical_state, to_items=False)
