"""Benchmarks of data loading, caches and the sensor encoder."""
