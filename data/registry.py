"""Dataset classes by name: ``dataset_class('PW3D')`` is ``data.PW3D.PW3D.PW3D``.

A dataset lives in ``data/<Name>/<Name>.py`` as a class ``<Name>``; the configuration's
``trainset_3d``, ``trainset_2d`` and ``testset`` hold such names.  ``testset`` may also name
an evaluation subset of a dataset (``EVALUATION_SUBSETS``: 3DPW-Crowd, 3DPW-OC, 3DPW-PC),
and may be a list of names (:func:`evaluation_names`).
"""
import functools
import importlib

KNOWN_DATASETS = ('Human36M', 'MuCo', 'MSCOCO', 'MPII', 'PW3D')

# Evaluation set name -> (dataset, the ``subset`` argument of its constructor).
EVALUATION_SUBSETS = {
    'PW3D-crowd': ('PW3D', 'crowd'),
    'PW3D-OC': ('PW3D', 'OC'),
    'PW3D-PC': ('PW3D', 'PC'),
}
TEST_SETS = KNOWN_DATASETS + tuple(EVALUATION_SUBSETS)

# Test sets whose ``crowd`` option selects another evaluation set (the original's option).
CROWD_ALIASES = {'PW3D': 'PW3D-crowd'}


def dataset_class(name):
    """The dataset class ``name`` from ``data/<name>/<name>.py`` (e.g. ``'PW3D'``); for an
    evaluation subset (e.g. ``'PW3D-OC'``) its dataset class with ``subset`` bound."""
    if name in EVALUATION_SUBSETS:
        base, subset = EVALUATION_SUBSETS[name]
        return functools.partial(dataset_class(base), subset=subset)
    module_name = f'data.{name}.{name}'
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, f'data.{name}'):
            raise
        raise ValueError(
            f"Unknown dataset '{name}': expected a class {name} in data/{name}/{name}.py "
            f"(known: {', '.join(KNOWN_DATASETS)}).") from exc
    if not hasattr(module, name):
        raise ValueError(f"data/{name}/{name}.py defines no class named {name}.")
    return getattr(module, name)


def dataset_files(name, options, data_split):
    """``{role: RequiredFile}`` of what ``dataset_class(name)(transform, data_split, options)`` reads,
    from the class's ``data_files`` (declared next to the loader that reads them); an evaluation
    subset (e.g. ``'PW3D-OC'``) passes its ``subset`` on."""
    base, subset = EVALUATION_SUBSETS.get(name, (name, None))
    declare = getattr(dataset_class(base), 'data_files', None)
    if declare is None:
        raise ValueError(f"data/{base}/{base}.py does not declare its files (a data_files(options, split) "
                         "function of the class).")
    if subset is None:
        return declare(options, data_split)
    return declare(options, data_split, subset=subset)


def evaluation_name(name, crowd=False):
    """The evaluation set that test set ``name`` means: with ``crowd``, ``'PW3D'`` is
    ``'PW3D-crowd'`` (as the original's ``crowd`` option); any other name is itself."""
    return CROWD_ALIASES.get(name, name) if crowd else name


def evaluation_names(testset, crowd=False):
    """The evaluation sets of the ``testset`` option (one name or a list), in order, each
    once (:func:`evaluation_name`)."""
    names = [testset] if isinstance(testset, str) else list(testset)
    return list(dict.fromkeys(evaluation_name(name, crowd) for name in names))
