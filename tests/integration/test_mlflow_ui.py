"""The MLflow UI a reviewer opens after a job: a tiny `jobs.run` against a real `mlflow server` on
loopback, then the run page and the registered model's page in headless Chromium (Debian's
`chromium`, driven by Playwright; no browser download). Screenshots are kept in the test's tmp dir
and copied to outputs/ui-screenshots/ for people to look at."""

from __future__ import annotations

import re
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
    cfg = load_config(
        None,
        [
            f"output_root={root}",
            "data.source=files",
            f"data.paths=[{corpus}]",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.labels=[neg, pos]",
            "tokenizer.max_length=32",
            "train.epochs=3",
            "train.lr=0.01",
            "promotion.min_metric=0.5",
            "tracking.experiment_name=ui",
            "tracking.system_metrics=false",
            f"tracking.tracking_uri={mlflow_server}",
            f"tracking.registered_model_name={MODEL}",
        ],
    )
    return run_job.run(cfg)


def _open(browser, url: str, wait_for: str):
    """Open `url` and wait until `wait_for` is rendered (the UI polls, so the network never idles)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url)
    page.get_by_text(wait_for).first.wait_for(timeout=90_000)
    assistant = page.get_by_role("button", name="Close")  # MLflow 3's assistant panel, if it opened
    if assistant.count():
        assistant.first.click()
    return page


def _shot(page, tmp_path: Path, name: str) -> None:
    """Screenshot into the test's tmp dir, copied to outputs/ui-screenshots/ (git-ignored)."""
    page.wait_for_timeout(1500)  # charts and images finish drawing after their data arrives
    page.screenshot(path=tmp_path / name, full_page=True)
    dest = REPO / "outputs" / "ui-screenshots"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / name, dest / name)


def test_run_page_shows_description_params_plots_and_promotion(browser, job, mlflow_server, tmp_path):
    o = job.outcome
    page = _open(browser, run_page_url(mlflow_server, o.experiment_id, o.run_id), "Show more")
    page.get_by_text("Show more").first.click()  # the description is folded after a few lines
    for heading in ("Result", "Training", "Data", "Model", "Promotion"):
        assert page.get_by_text(heading, exact=True).first.is_visible(), heading
    for text in ("promoted to", "compared against", "McNemar p-value", re.compile(r"batch size \d+ per worker")):
        assert page.get_by_text(text).first.is_visible(), text  # (the batch size adapts to a tiny corpus)
    params = page.get_by_text("Parameters (")
    params.first.scroll_into_view_if_needed()
    assert params.first.is_visible()
    assert page.get_by_text("train.epochs", exact=True).first.is_visible()
    _shot(page, tmp_path, "run-overview.png")

    page.get_by_role("tab", name="Model metrics").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    for section in ("train", "val"):  # the learning curves' groups, drawn before the test_ scores
        assert page.get_by_text(section, exact=True).first.is_visible(), section
    assert page.locator(".js-plotly-plot").count() >= 5  # train/loss, val/loss, val/accuracy, ...
    _shot(page, tmp_path, "run-metrics.png")

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("learning_curves.png").first.click()
    image = page.locator("img[src^='blob:']")  # the UI shows the fetched artifact as a blob
    image.first.wait_for(timeout=60_000)
    assert image.first.evaluate("img => img.complete && img.naturalWidth > 0")  # the plot loaded
    _shot(page, tmp_path, "run-artifacts.png")


def test_registered_model_page_shows_the_policy_and_the_champion(browser, job, mlflow_server, tmp_path):
    page = _open(browser, registered_model_url(mlflow_server, MODEL), "is what serving loads")
    assert page.get_by_text("A first version needs only the minimum").first.is_visible()
    alias = page.get_by_text(re.compile(r"^@\s+champion$"))  # the alias chip on version 1's row: "@ champion"
    alias.first.wait_for(timeout=60_000)
    assert alias.first.is_visible()
    _shot(page, tmp_path, "registered-model.png")
