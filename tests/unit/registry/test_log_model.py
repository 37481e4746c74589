"""What the served model ships: the import closure of its entry file, no more (no training pipeline,
Ray, `datasets` or YAML), and pins for exactly the distributions that closure imports."""

from __future__ import annotations

from pipeline.registry.log_model import MODEL_ENTRY, ROOT, serving_closure, serving_requirements


def test_serving_ships_its_import_closure_and_nothing_of_training():
    files, third_party = serving_closure(MODEL_ENTRY)
    shipped = {str(f.relative_to(ROOT)) for f in files}
    assert {
        "pipeline/registry/raw_text_model.py",
        "pipeline/model.py",
        "pipeline/data/encode.py",
        "pipeline/evaluation/scoring.py",
        "schemas/config.py",
        "pipeline/__init__.py",
    } <= shipped
    assert not shipped & {
        "pipeline/train/loop.py",
        "pipeline/data/prepare.py",
        "pipeline/tracking.py",
        "schemas/features.py",
        "pipeline/registry/promotion.py",
        "pipeline/evaluation/metrics.py",
    }
    assert not third_party & {"ray", "datasets", "yaml", "sklearn", "matplotlib"}


def test_requirements_pin_exactly_the_imported_distributions():
    _, third_party = serving_closure(MODEL_ENTRY)
    pins = serving_requirements(third_party)
    names = {p.split("==")[0] for p in pins}
    assert names == {"mlflow", "torch", "tokenizers", "numpy", "pandas", "pyarrow", "pydantic"}
    assert all("+" not in p for p in pins)  # no local version tags such as +cpu
