"""Dataset classes by name: ``dataset_class('PW3D')`` is ``data.PW3D.PW3D.PW3D``.

A dataset lives in ``data/<Name>/<Name>.py`` as a class ``<Name>``; the configuration's
``trainset_3d``, ``trainset_2d`` and ``testset`` hold such names.
"""
import importlib

KNOWN_DATASETS = ('Human36M', 'MuCo', 'MSCOCO', 'MPII', 'PW3D')


def dataset_class(name):
    """The dataset class ``name`` from ``data/<name>/<name>.py`` (e.g. ``'PW3D'``)."""
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
    from the class's ``data_files`` (declared next to the loader that reads them)."""
    cls = dataset_class(name)
    declare = getattr(cls, 'data_files', None)
    if declare is None:
        raise ValueError(f"data/{name}/{name}.py does not declare its files (a data_files(options, split) "
                         "function of the class).")
    return declare(options, data_split)
