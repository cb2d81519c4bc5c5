"""One MLLM client for the whole system (instruction rewriting, the benchmark judge, RL rewards)."""
