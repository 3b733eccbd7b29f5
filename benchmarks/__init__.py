"""The project's speed benchmark, a tool beside the library (not part of the installed package).

- `benchmarks.common`: timers, peak memory, the machine description, the Markdown writer, the plain PyTorch
  baselines and the ours-vs-plain comparisons; imports only torch, numpy and the library, so
  `scripts/gpu_benchmark.py` uses it where Kedro is not installed;
- `benchmarks.config`: the project's parameters through Kedro's `OmegaConfigLoader` and the preset export;
- `benchmarks.run`: the command, `python -m benchmarks --env base --out docs/benchmarks.md` from the repository root;
- `benchmarks/presets/*.json`: exported parameters for the GPU script (`--export-preset`).

Importing this package imports nothing (the GPU machine imports `benchmarks.common` alone).
"""
