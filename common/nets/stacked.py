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


def _split_state(module, names, states):
    """Per-item optimizer states of one stacked module from the states of its own parameters.

    ``states``: one dict per own parameter (same keys).  Tensors shaped like the parameter are
    split with ``canonical_items``; other values (e.g. Adam's scalar ``step``) are shared by
    every item and copied.  Returns a list of per-item state dicts in per-item order.
    """
    params = dict(module.named_parameters())
    count = len(module.canonical_items(params))
    per_item = [dict() for _ in range(count)]
    for key in states[0]:
        values = {name: state[key] for name, state in zip(names, states)}
        if all(getattr(values[name], 'shape', None) == params[name].shape for name in names):
            for item, (_, tensor) in zip(per_item, module.canonical_items(values)):
                item[key] = tensor.clone()
        else:
            for item in per_item:
                item[key] = values[names[0]].clone() if hasattr(values[names[0]], 'clone') else values[names[0]]
    return per_item


def _merge_state(module, names, per_item_states):
    """Inverse of ``_split_state``: the states of a stacked module's own parameters."""
    params = dict(module.named_parameters())
    item_names = [name for name, _ in module.canonical_items(params)]
    merged = [dict() for _ in names]
    for key in per_item_states[0]:
        values = {item: state[key] for item, state in zip(item_names, per_item_states)}
        first = values[item_names[0]]
        if getattr(first, 'dim', lambda: 0)() > 0:
            stacked = module.stacked_items(values)
            for state, name in zip(merged, names):
                state[key] = stacked[name].clone()
        else:
            for state in merged:
                state[key] = first.clone() if hasattr(first, 'clone') else first
    return merged


def _copied(state):
    """A copy of one parameter's optimizer state: ``load_state_dict`` keeps tensors it need not
    convert, so a state shared with another optimizer would be updated by both."""
    return {key: value.clone() if hasattr(value, 'clone') else value for key, value in state.items()}


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


def canonical_optimizer_state(model, optimizer):
    """``optimizer.state_dict()`` in the per-item layout (what snapshots store).

    model: the module whose parameters ``optimizer`` holds (a DataParallel/DDP wrapper is fine).
    """
    saved = optimizer.state_dict()
    state, groups, new_index = {}, [], 0
    for (group, runs), saved_group in zip(_walk_groups(model, optimizer), saved['param_groups']):
        saved_ids, position, ids = saved_group['params'], 0, []
        for module, params in runs:
            old_ids = saved_ids[position:position + len(params)]
            position += len(params)
            present = [i in saved['state'] for i in old_ids]
            if module is None:
                pieces = [_copied(saved['state'][old_ids[0]]) if present[0] else None]
            elif all(present):
                names = [name for name, _ in module.named_parameters()]
                pieces = _split_state(module, names, [saved['state'][i] for i in old_ids])
            elif not any(present):
                pieces = [None] * len(module.canonical_items(dict(module.named_parameters())))
            else:
                raise ValueError(f'optimizer state exists for only some parameters of {type(module).__name__}')
            for piece in pieces:
                if piece is not None:
                    state[new_index] = piece
                ids.append(new_index)
                new_index += 1
        groups.append({**saved_group, 'params': ids})
    return {'state': state, 'param_groups': groups}


def stacked_optimizer_state(model, optimizer, canonical_state):
    """A per-item optimizer state dict (a snapshot's, a released file's) for ``optimizer``.

    Returns a state dict for ``optimizer.load_state_dict``.  Raises ValueError when the saved
    groups or parameter counts do not fit the model.
    """
    saved_groups = canonical_state['param_groups']
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(f'the saved optimizer state has {len(saved_groups)} parameter groups, '
                         f'the optimizer {len(optimizer.param_groups)}')
    saved_state = canonical_state['state']
    state, groups, new_index = {}, [], 0
    for (group, runs), saved_group in zip(_walk_groups(model, optimizer), saved_groups):
        saved_ids, position, ids = list(saved_group['params']), 0, []
        for module, params in runs:
            count = 1 if module is None else len(module.canonical_items(dict(module.named_parameters())))
            if position + count > len(saved_ids):
                raise ValueError(f'a saved optimizer group lists {len(saved_ids)} parameters, '
                                 'fewer than the model has')
            item_ids = saved_ids[position:position + count]
            position += count
            present = [i in saved_state for i in item_ids]
            if module is None:
                merged = [_copied(saved_state[item_ids[0]]) if present[0] else None]
            elif all(present):
                names = [name for name, _ in module.named_parameters()]
                merged = _merge_state(module, names, [saved_state[i] for i in item_ids])
            elif not any(present):
                merged = [None] * len(params)
            else:
                raise ValueError(f'the saved optimizer state covers only some items of {type(module).__name__}')
            for piece in merged:
                if piece is not None:
                    state[new_index] = piece
                ids.append(new_index)
                new_index += 1
        if position != len(saved_ids):
            raise ValueError(f'a saved optimizer group lists {len(saved_ids)} parameters, the model '
                             f'has {position} in that group')
        groups.append({**saved_group, 'params': ids})
    return {'state': state, 'param_groups': groups}
