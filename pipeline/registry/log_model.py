"""Log the raw-text pyfunc model into the active run, shipping only what serving imports.

The served model carries the modules its entry file imports from this project (found by reading
their import statements, so a new import ships itself) and pins only the distributions those
modules import: a scoring server does not need Ray, `datasets`, YAML or the training pipeline.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import tempfile
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch

from pipeline.registry.raw_text_model import SPEC, TOKENIZER, WEIGHTS, model_spec
from schemas.config import ModelConfig
from schemas.features import Manifest
from schemas.signature import TEXT_COLUMN, model_signature

ROOT = Path(__file__).resolve().parents[2]
MODEL_ENTRY = ROOT / "pipeline" / "registry" / "model_entry.py"
OUR_PACKAGES = ("pipeline", "schemas")
MODEL_NAME_IN_RUN = "model"


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return names


def serving_closure(entry: Path = MODEL_ENTRY) -> tuple[set[Path], set[str]]:
    """(our files serving needs, package __init__ files included; third-party top-level modules)."""
    ours: set[Path] = set()
    third_party: set[str] = set()
    todo = [entry]
    while todo:
        for name in _imports(todo.pop()):
            top = name.split(".")[0]
            if top not in OUR_PACKAGES:
                if top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the module and every package above it
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in ours:
                    ours.add(f)
                    todo.append(f)
    return ours, third_party


def serving_requirements(third_party: set[str]) -> list[str]:
    """Exact pins of the distributions serving imports, so `mlflow models serve` rebuilds that env."""
    dists = packages_distributions()
    pins = set()
    for module in third_party:
        found = dists.get(module, [module])
        # `mlflow` is also provided by mlflow-skinny/-tracing (its own dependencies): pin the namesake.
        for dist in [d for d in found if d.lower().replace("_", "-") == module] or found:
            pins.add(f"{dist}=={version(dist).split('+')[0]}")  # torch 2.x+cpu -> 2.x (the index decides)
    return sorted(pins)


def _stage_code(files: set[Path], dest: Path) -> list[str]:
    """Copy `files` into `dest`, keeping their package paths; returns the top-level folders."""
    for f in files:
        target = dest / f.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return [str(dest / p) for p in OUR_PACKAGES if (dest / p).is_dir()]


def log_raw_text_model(
    state_dict: dict[str, Any],
    manifest: Manifest,
    tokenizer_file: Path,
    model_cfg: ModelConfig,
    example_texts: list[str],
    step: int = 0,
) -> mlflow.models.model.ModelInfo:
    """Log the pyfunc into the active run at `step`: MLflow links the run's metrics of that step to the
    logged model. Returns MLflow's ModelInfo (its model_uri)."""
    files, third_party = serving_closure()
    with tempfile.TemporaryDirectory(prefix="rnn-model-") as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, weights)
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(model_spec(manifest, model_cfg), indent=2, ensure_ascii=False))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(MODEL_ENTRY),
            artifacts={WEIGHTS: str(weights), TOKENIZER: str(tokenizer_file), SPEC: str(spec)},
            code_paths=_stage_code(files, Path(tmp) / "code"),
            signature=model_signature(list(manifest.label_names)),
            input_example=pd.DataFrame({TEXT_COLUMN: example_texts}),
            pip_requirements=serving_requirements(third_party),
            step=step,
        )
