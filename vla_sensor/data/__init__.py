"""Sensor and trajectory data: on-disk format, windows, caches, datasets, generated recordings."""
