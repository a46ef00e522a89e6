"""Measurement code of ``tool/benchmark.py``, one module per mode that has grown beyond a function."""
