"""Per-dataset writers of the synthetic data tree (docs/METHOD.md, "Data on disk"), used by ``tool/make_synthetic_data.py``.

Each module ``tool/synthetic/<name>.py`` (human36m, muco, mscoco, mpii, pw3d) exposes
``write(root, smpl, rng)``; ``common`` holds the shared helpers (poses, cameras, rendering,
deterministic JSON/JPEG writing).
"""
