"""The project's parameters as `kedro run --env <env>` sees them: Kedro's own `OmegaConfigLoader` with the project's
settings (`scrub_unlearning.settings.CONFIG_LOADER_ARGS`: base env, soft merge of parameters and globals, the
`project_root` resolver), so an environment overrides single keys of base and `${globals:...}` resolves exactly as
in a pipeline run. Also the preset export read by `scripts/gpu_benchmark.py` on a machine without Kedro.

Imports Kedro (only the benchmark command uses this module; `benchmarks.common` never imports it).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

PRESET_FORMAT = 1


def find_project_root() -> Path:
    """The current directory when it holds `conf/base`, else the checkout this package lives in."""
    if (Path.cwd() / "conf" / "base").is_dir():
        return Path.cwd()
    return Path(__file__).resolve().parents[1]


def config_loader(env: str, root: str | Path | None = None):
    """The project's config loader (Kedro's `OmegaConfigLoader` with the tuned-settings overlay) over
    `<root>/conf` for `env`, with the project's `CONFIG_LOADER_ARGS`."""
    from scrub_unlearning.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    conf = Path(root or find_project_root()) / "conf"
    if not (conf / "base").is_dir():
        raise FileNotFoundError(f"no configuration folder '{conf / 'base'}'")
    if not (conf / env).is_dir():
        known = sorted(p.name for p in conf.iterdir() if p.is_dir())
        raise ValueError(f"unknown environment '{env}'; the configuration folders are {known}")
    return CONFIG_LOADER_CLASS(str(conf), env=env, **CONFIG_LOADER_ARGS)


def load_parameters(env: str, root: str | Path | None = None) -> dict:
    """The resolved `parameters` of `conf/base` + `conf/<env>` (`--env base`: base alone), as a plain dict."""
    with warnings.catch_warnings():  # Kedro's own resolver registration, not ours to fix
        warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
        return dict(config_loader(env, root)["parameters"])


def preset(env: str, parameters: dict) -> dict:
    """The JSON document `--export-preset` writes: which environment, and its resolved parameters."""
    return {"format": PRESET_FORMAT, "env": env,
            "written_by": f"python -m benchmarks --env {env} --export-preset <path>",
            "parameters": parameters}


def export_preset(env: str, path: str | Path, root: str | Path | None = None) -> Path:
    """Write `env`'s resolved parameters to `path` as JSON (sorted keys, so a re-export diffs cleanly)."""
    path = Path(path)
    document = preset(env, load_parameters(env, root))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
