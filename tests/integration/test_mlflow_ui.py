"""The MLflow UI a reviewer opens after a job: a tiny `jobs.run` against a real `mlflow server` on
loopback, then the run page and the registered model's page in headless Chromium (Debian's
`chromium`, driven by Playwright; no browser download). Screenshots are kept in the test's tmp dir
and copied to outputs/ui-screenshots/ for people to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs import run as run_job
from jobs.config_loader import load_config
from pipeline.tracking import registered_model_url, run_page_url
from tests.conftest import REPO
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
MODEL = "ui-model"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def job(ray_cluster, mlflow_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-job")
    corpus = write_corpus(root / "reviews.csv", rows=600)
    cfg = load_config(None, [
        f"output_root={root}", "data.source=files", f"data.paths=[{corpus}]", "data.text_column=review",
        "data.label_column=sentiment", "data.labels=[neg, pos]", "tokenizer.max_length=32", "train.epochs=3",
        "train.lr=0.01", "promotion.min_metric=0.5", "tracking.experiment_name=ui", f"tracking.tracking_uri={mlflow_server}",
        f"tracking.registered_model_name={MODEL}", "tracking.system_metrics=false",
    ])
    return run_job.run(cfg)


def _page(browser, url: str, shot: Path, wait_for: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url)
    page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    return page


def _keep(shot: Path) -> None:
    dest = REPO / "outputs" / "ui-screenshots"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, dest / shot.name)


def test_run_page_shows_description_params_plots_and_promotion(browser, job, mlflow_server, tmp_path):
    o = job.outcome
    page = _page(browser, run_page_url(mlflow_server, o.experiment_id, o.run_id), tmp_path / "run.png", "Promotion")
    for text in ("Training", "Promotion", "promoted to @champion", "compared against", "train.epochs", "train.lr"):
        assert page.get_by_text(text).first.is_visible(), text
    page.screenshot(path=tmp_path / "run.png", full_page=True)
    _keep(tmp_path / "run.png")

    page.get_by_role("tab", name="Model metrics").click()
    for metric in ("val/accuracy", "train/loss"):
        page.get_by_text(metric).first.wait_for(timeout=60_000)
    assert page.locator("canvas, svg.main-svg, .js-plotly-plot").count() > 0  # charts drawn
    page.screenshot(path=tmp_path / "run-metrics.png", full_page=True)
    _keep(tmp_path / "run-metrics.png")

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("plots").first.click()
    page.get_by_text("learning_curves.png").first.click()
    page.locator("img").last.wait_for(timeout=60_000)
    page.screenshot(path=tmp_path / "run-artifacts.png", full_page=True)
    _keep(tmp_path / "run-artifacts.png")


def test_registered_model_page_shows_the_policy_and_the_champion(browser, job, mlflow_server, tmp_path):
    page = _page(browser, registered_model_url(mlflow_server, MODEL), tmp_path / "model.png", "is what serving loads")
    assert page.get_by_text("@champion").first.is_visible()
    page.screenshot(path=tmp_path / "model.png", full_page=True)
    _keep(tmp_path / "model.png")
    assert page.get_by_text("champion", exact=True).first.is_visible()  # the alias tag on version 1
