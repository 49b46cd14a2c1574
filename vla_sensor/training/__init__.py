"""Training: the Accelerate loop, checkpointing and metrics."""
