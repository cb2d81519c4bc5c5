"""editkit: the umbrella CLI over the project's packages (curate -> annotate -> benchmarks -> train)."""
