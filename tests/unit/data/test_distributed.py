"""The same stages inline and as Ray tasks: identical splits and digests; a bad shard names itself."""

from __future__ import annotations

import pytest

from pipeline.data.prepare import prepare
from pipeline.data.store import is_complete, read_split_arrays, read_texts
from pipeline.errors import DataValidationError, UserInputError

pytestmark = pytest.mark.integration


def _shards(fx) -> tuple[str, ...]:
    return (str(fx / "shards/part-0.csv"), str(fx / "shards/part-1.csv"), str(fx / "bad/duplicates.csv"))


def test_local_and_ray_give_the_same_splits_and_digests(fx, job, tmp_path, ray_cluster):
    common = {"source": "files", "paths": _shards(fx), "partitions": 3, "shard_mb": 0.001}
    local = prepare(job(output_root=str(tmp_path / "local"), prepare_mode="local", **common))
    dist = prepare(job(output_root=str(tmp_path / "ray"), prepare_mode="ray", **common))
    assert (local.manifest.prepare_mode, dist.manifest.prepare_mode) == ("local", "ray")
    assert local.manifest.cache_key == dist.manifest.cache_key  # the mode is not part of the key
    assert local.manifest.content_digest == dist.manifest.content_digest
    assert local.manifest.splits == dist.manifest.splits  # shards, row counts, digests
    assert local.manifest.cleaning == dist.manifest.cleaning
    assert len(local.manifest.splits["train"].shards) > 3  # several partitions, several shards each
    for split in ("train", "validation", "test"):
        assert read_texts(local.path, split)[0] == read_texts(dist.path, split)[0]
        assert (read_split_arrays(local.path, split)[0] == read_split_arrays(dist.path, split)[0]).all()
    # merged from shards, the same per-reason counts as one file prepared alone
    # (each fixture text twice, three of them thrice, one with two labels: every copy of it dropped)
    assert dist.manifest.cleaning.dropped == {"conflicting_label": 3, "duplicate": 42}


def test_partition_count_changes_the_layout_not_the_rows(fx, job, tmp_path):
    one = prepare(job(output_root=str(tmp_path / "one"), source="files", paths=_shards(fx), partitions=1))
    many = prepare(job(output_root=str(tmp_path / "many"), source="files", paths=_shards(fx), partitions=5))
    for split in ("train", "validation", "test"):
        assert read_texts(one.path, split)[0] == read_texts(many.path, split)[0]
    assert one.manifest.tokenizer_digest == many.manifest.tokenizer_digest


def test_one_malformed_shard_fails_naming_it_and_publishes_nothing(fx, job, tmp_path, ray_cluster):
    paths = (str(fx / "shards/part-0.csv"), str(fx / "bad/malformed.csv"), str(fx / "shards/part-1.csv"))
    cfg = job(output_root=str(tmp_path / "out"), source="files", paths=paths, prepare_mode="ray", partitions=2)
    with pytest.raises(DataValidationError, match=r"^\S*malformed\.csv: line 12: the row has 3 fields"):
        prepare(cfg)
    data = tmp_path / "out" / "data"
    assert not data.exists() or not [d for d in data.iterdir() if is_complete(d)]


@pytest.mark.slow
def test_disk_full_in_a_task_is_one_line_and_no_task_writes_after_cleanup(job, tmp_path, tiny_disk, ray_cluster):
    import time

    path = tmp_path / "varied.csv"
    path.write_text(
        "text,label\n"
        + "".join(f"{' '.join(f'w{j}' for j in range(i + 1))},{'pos' if i % 2 else 'neg'}\n" for i in range(400)),
        encoding="utf-8",
    )
    cfg = job(
        output_root=str(tiny_disk),
        source="files",
        paths=(str(path),),
        tokenizer={"max_length": 256},
        prepare_mode="ray",
        partitions=4,
    )  # 4 encode tasks write at once; ~400 KiB of ids for 64 KiB
    with pytest.raises(UserInputError, match=r"^[^\n]*no space left[^\n]*output_root[^\n]*$"):
        prepare(cfg)
    time.sleep(2)  # a task still running would write here after the cleanup
    data = tiny_disk / "data"
    assert not data.exists() or list(data.iterdir()) == []


@pytest.mark.slow
def test_stray_quote_and_empty_file_same_outcome_in_ray_tasks(job, tmp_path, ray_cluster):
    rows = [f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)]
    stray = tmp_path / "stray.csv"
    stray.write_text(
        "text,label\n" + "".join(rows[:10]) + '"stray,neg\nswallowed,pos\nclosed "here",pos\n' + "".join(rows[10:])
    )
    common = {"source": "files", "paths": (str(stray),), "partitions": 2}
    with pytest.raises(DataValidationError, match=r"^\S*stray\.csv: line \d+-\d+: a double quote[^\n]*$"):
        prepare(job(output_root=str(tmp_path / "e"), prepare_mode="ray", **common))
    skip = {**common, "on_bad_csv_row": "skip", "max_drop_fraction": 0.2}
    local = prepare(job(output_root=str(tmp_path / "local"), prepare_mode="local", **skip)).manifest
    dist = prepare(job(output_root=str(tmp_path / "ray"), prepare_mode="ray", **skip)).manifest
    assert dist.cleaning == local.cleaning and dist.cleaning.dropped["bad_csv_row"] == 3
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match=r"^\S*empty\.csv is empty[^\n]*data\.paths$"):
        prepare(
            job(
                output_root=str(tmp_path / "x"),
                source="files",
                paths=(str(stray), str(empty)),
                prepare_mode="ray",
                on_bad_csv_row="skip",
                max_drop_fraction=0.2,
            )
        )


def _hub_parquet_folder(root, fixtures_module):
    """A local dataset folder laid out as the Hub's Parquet conversions are: several data files per
    split and a ClassLabel label feature (ids in the files, names in the schema's metadata)."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    texts = fixtures_module.rows(fixtures_module.N_ROWS)
    for split, part in (("train", 0), ("train", 1), ("train", 2), ("test", 0)):
        chunk = texts[part::3] if split == "train" else fixtures_module.rows(20, offset=900)
        data = {"text": [t for t, _ in chunk], "label": [["neg", "pos"].index(lab) for _, lab in chunk]}
        (root / "data").mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(data, features=features).to_parquet(root / f"data/{split}-{part:05d}-of-00003.parquet")
    return root


def test_a_hub_dataset_is_planned_file_by_file_and_read_by_the_tasks(job, tmp_path, ray_cluster, fixtures_module):
    from pipeline.data.sources import plan_units

    folder = _hub_parquet_folder(tmp_path / "hub_parquet", fixtures_module)
    cfg = job(output_root=str(tmp_path / "local"), source="hub", name=str(folder), prepare_mode="local")
    plan = plan_units(cfg.data)
    # one shard per data file, and no rows on the driver: the tasks load their file themselves
    assert sorted((u.split, u.kind, u.uris[0].rsplit("/", 1)[1]) for u in plan.units) == [
        ("test", "hub", "test-00000-of-00003.parquet"),
        ("train", "hub", "train-00000-of-00003.parquet"),
        ("train", "hub", "train-00001-of-00003.parquet"),
        ("train", "hub", "train-00002-of-00003.parquet"),
    ]
    assert plan.tables == {}
    local = prepare(cfg)
    dist = prepare(job(output_root=str(tmp_path / "ray"), source="hub", name=str(folder), prepare_mode="ray"))
    assert local.manifest.content_digest == dist.manifest.content_digest
    assert local.manifest.splits == dist.manifest.splits
    assert local.manifest.label_names == ["neg", "pos"]  # the ClassLabel's names, not ids 0/1
    assert local.manifest.splits["test"].rows == 20  # the dataset's own test split is kept
    # the lineage names each data file with its own digest: edit one file and the digest changes
    assert sorted(i.uri for i in local.manifest.inputs) == [
        "data/test-00000-of-00003.parquet",
        "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet",
    ]
    assert all(i.sha256 for i in local.manifest.inputs)
