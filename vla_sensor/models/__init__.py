"""Models: the sensor encoder, the Qwen-VL backbone and the fused action policy."""
