"""Object storage end to end on a local S3-compatible server (moto): inputs and output_root on s3://,
in-process and as Ray tasks in another process (no folder shared between the two)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.sources import plan_units
from pipeline.data.store import is_complete, read_split_arrays, read_texts
from pipeline.errors import DataValidationError, UserInputError
from tests.conftest import s3_keys

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _upload(bucket: str, files: dict[str, Path]) -> tuple[str, ...]:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    name = bucket.removeprefix("s3://")
    for key, path in files.items():
        s3.upload_file(str(path), name, key)
    return tuple(f"{bucket}/{key}" for key in files)


def test_prepare_reads_and_writes_s3(fx, job, s3_bucket, tmp_path):
    _upload(s3_bucket, {f"corpus/part-{k}.csv": fx / f"shards/part-{k}.csv" for k in range(2)})
    cfg = job(output_root=f"{s3_bucket}/runs", source="files", paths=(f"{s3_bucket}/corpus/",), partitions=2)
    first = prepare(cfg)
    assert isinstance(first.path, str) and first.path.startswith(f"{s3_bucket}/runs/data/")
    assert is_complete(first.path) and first.manifest.inputs[0].uri == f"{s3_bucket}/corpus/part-0.csv"
    keys = s3_keys(s3_bucket, "runs/data/")
    assert any(k.endswith("/train/part-00001-000.parquet") for k in keys)
    assert any(k.endswith("/_COMPLETE") for k in keys)
    ids, labels, _ = read_split_arrays(first.path, "train")
    assert ids.shape == (32, 16) and len(labels) == 32
    again = prepare(cfg)
    assert again.reused and again.manifest == first.manifest
    # the same corpus from local files gives the same split and content
    local = prepare(
        job(
            output_root=str(tmp_path / "local"),
            source="files",
            partitions=2,
            paths=(str(fx / "shards/part-0.csv"), str(fx / "shards/part-1.csv")),
        )
    )
    assert local.manifest.content_digest == first.manifest.content_digest
    assert read_texts(local.path, "test")[0] == read_texts(first.path, "test")[0]


def test_bad_shard_on_s3_names_the_url_and_publishes_nothing(fx, job, s3_bucket):
    paths = _upload(s3_bucket, {"corpus/a.csv": fx / "shards/part-0.csv", "corpus/b.csv": fx / "bad/malformed.csv"})
    with pytest.raises(DataValidationError, match=r"s3://\S+/corpus/b\.csv: line 12: the row has 3 fields"):
        prepare(job(output_root=f"{s3_bucket}/runs", source="files", paths=paths))
    assert not [k for k in s3_keys(s3_bucket, "runs/") if k.endswith("_COMPLETE")]


def test_a_compressed_object_prepares_as_the_plain_file_and_is_hashed_as_stored(fx, job, s3_bucket, tmp_path):
    packed = tmp_path / "part-0.csv.gz"
    packed.write_bytes(gzip.compress((fx / "shards/part-0.csv").read_bytes()))
    (url,) = _upload(s3_bucket, {"packed/part-0.csv.gz": packed})
    remote = prepare(job(output_root=str(tmp_path / "remote"), source="files", paths=(f"{s3_bucket}/packed/",)))
    local = prepare(job(output_root=str(tmp_path / "local"), source="files", paths=(str(fx / "shards/part-0.csv"),)))
    assert remote.manifest.content_digest == local.manifest.content_digest
    (entry,) = remote.manifest.inputs
    assert entry.uri == url and entry.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()


_RAY_PREPARE = """
import json, sys
import ray
from pipeline.data.prepare import prepare
from schemas.config import JobConfig
cfg = JobConfig.model_validate({**json.loads(sys.argv[1]), "ray": {"num_cpus": 2}})
manifest = prepare(cfg).manifest  # starts its own local cluster
assert not ray.is_initialized()  # ... and stops it
print(json.dumps(manifest.model_dump(mode="json")))
"""


@pytest.mark.slow
def test_ray_tasks_in_another_process_write_the_same_dataset_to_s3(fx, job, s3_bucket):
    paths = _upload(s3_bucket, {f"corpus/part-{k}.csv": fx / f"shards/part-{k}.csv" for k in range(2)})
    local = prepare(job(output_root=f"{s3_bucket}/local", source="files", paths=paths, partitions=3))
    cfg = job(output_root=f"{s3_bucket}/ray", source="files", paths=paths, partitions=3, prepare_mode="ray")
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_PREPARE, cfg.model_dump_json()],
        cwd=REPO,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert manifest["prepare_mode"] == "ray" and manifest["content_digest"] == local.manifest.content_digest
    assert manifest["splits"] == local.manifest.model_dump(mode="json")["splits"]


_RAY_TRAIN = """
import json, sys
import ray
from pipeline.data.prepare import prepare
from pipeline.train.trainer import fit
from schemas.config import JobConfig
cfg = JobConfig.model_validate_json(sys.argv[1])
ray.init(address="local", num_cpus=2, include_dashboard=False)
prepared = prepare(cfg)
result = fit(cfg, prepared.path, "s3-run", tracking_uri=None, run_id=None)
print(json.dumps({"epochs": len(result.history)}))
"""


@pytest.mark.slow
def test_training_reads_s3_data_and_checkpoints_to_s3(fx, job, s3_bucket):
    """Ray Train's storage_path and checkpoints on the object store (trainer.checkpoint_storage)."""
    paths = _upload(s3_bucket, {f"corpus/part-{k}.csv": fx / f"shards/part-{k}.csv" for k in range(2)})
    cfg = job(output_root=f"{s3_bucket}/job", source="files", paths=paths).model_copy(
        update={
            "train": job().train.model_copy(update={"epochs": 1, "batch_size": 8}),
            "scaling": job().scaling.model_copy(update={"num_workers": 1}),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_TRAIN, cfg.model_dump_json()],
        cwd=REPO,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["epochs"] == 1
    keys = s3_keys(s3_bucket, "job/ray_results/s3-run/")
    assert any("checkpoint_" in k for k in keys), keys


@pytest.mark.slow
def test_mlflow_artifacts_land_in_s3(s3_bucket, tmp_path):
    """`mlflow server --artifacts-destination s3://...` (MLFLOW_S3_ENDPOINT_URL set): clients upload through
    the server, which stores the files in the bucket."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import mlflow_server_process

    with mlflow_server_process(tmp_path, f"{s3_bucket}/mlartifacts") as uri:
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("s3-artifacts"))
        note = tmp_path / "note.txt"
        note.write_text("stored in the bucket")
        client.log_artifact(run.info.run_id, str(note), "data")
        client.set_terminated(run.info.run_id)
        keys = s3_keys(s3_bucket, "mlartifacts/")
        assert [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/data/note.txt")], keys


def test_a_folder_layout_on_s3_prepares_as_the_local_folder(fx, job, s3_bucket, tmp_path):
    # data.source=folder with an s3:// root: one listing of <split>/<label>/*.txt, each task's files
    # fetched for `datasets`' text reader. Before, the root was refused as "not a folder".
    root = fx / "imdb"
    _upload(s3_bucket, {f"imdb/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*.txt"))})
    labels = ("neg", "pos")
    remote = prepare(
        job(output_root=str(tmp_path / "r"), source="folder", paths=(f"{s3_bucket}/imdb/",), labels=labels)
    )
    local = prepare(job(output_root=str(tmp_path / "l"), source="folder", paths=(str(root),), labels=labels))
    assert remote.manifest.content_digest == local.manifest.content_digest
    assert [e.uri for e in remote.manifest.inputs] == [e.uri for e in local.manifest.inputs]  # relative to the root
    assert remote.manifest.splits["test"].rows == 40
    for split in ("train", "validation", "test"):
        (texts, ids), (local_texts, local_ids) = read_texts(remote.path, split), read_texts(local.path, split)
        assert texts == local_texts and list(ids) == list(local_ids)
    with pytest.raises(UserInputError, match=r"data\.paths\[0\]='s3://\S+/absent' is not a folder"):
        prepare(job(output_root=str(tmp_path / "a"), source="folder", paths=(f"{s3_bucket}/absent",)))


def test_a_save_to_disk_folder_on_s3_prepares_as_the_local_folder(job, s3_bucket, tmp_path):
    # data.source=hub with an s3:// save_to_disk folder (datasets writes those to object storage too):
    # its Arrow files are the shards, each fetched by the task that reads it; lineage names them
    # relative to the folder, so the content digest is the local copy's.
    import datasets

    rows = {"text": [f"review {i} {'great fun' if i % 2 else 'awful bore'}" for i in range(60)]}
    rows["label"] = [i % 2 for i in range(60)]
    ds = datasets.Dataset.from_dict(rows).cast_column("label", datasets.ClassLabel(names=["neg", "pos"]))
    root = tmp_path / "saved"
    datasets.DatasetDict({"train": ds.select(range(45)), "test": ds.select(range(45, 60))}).save_to_disk(str(root))
    _upload(s3_bucket, {f"saved/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*")) if p.is_file()})
    remote = prepare(job(output_root=str(tmp_path / "r"), source="hub", name=f"{s3_bucket}/saved"))
    local = prepare(job(output_root=str(tmp_path / "l"), source="hub", name=str(root)))
    assert remote.manifest.content_digest == local.manifest.content_digest
    assert remote.manifest.splits["test"].rows == 15 and remote.manifest.label_names == ["neg", "pos"]
    for split in ("train", "validation", "test"):
        assert read_texts(remote.path, split)[0] == read_texts(local.path, split)[0]
    # A prefix that holds data files but no save_to_disk metadata still points to data.source=files.
    _upload(s3_bucket, {"csv/part.csv": root / "dataset_dict.json"})
    with pytest.raises(UserInputError, match=r"holds no state.json or dataset_dict.json.*set data.source=files"):
        prepare(job(output_root=str(tmp_path / "c"), source="hub", name=f"{s3_bucket}/csv"))


def test_parts_of_a_large_object_are_ranged_reads(job, s3_bucket, tmp_path):
    # A file over data.split_file_mb on object storage: each part reads its byte range (CSV) or its row
    # groups (Parquet), and the result is the local file's, read whole.
    import pandas as pd

    rows = [
        (f"review {i} {'great fun' if i % 2 else 'awful bore'}" + ("\n2nd line" if i % 5 == 0 else ""), i % 2)
        for i in range(2000)
    ]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet", row_group_size=250)
    for name in ("a.csv", "a.parquet"):
        (uri,) = _upload(s3_bucket, {name: tmp_path / name})
        cfg = job(output_root=str(tmp_path / f"r-{name}"), source="files", paths=(uri,), split_file_mb=0.01)
        assert len(plan_units(cfg.data).units) > 1, name
        remote = prepare(cfg)
        local = prepare(job(output_root=str(tmp_path / f"l-{name}"), source="files", paths=(str(tmp_path / name),)))
        assert remote.manifest.content_digest == local.manifest.content_digest, name
        assert [e.sha256 for e in remote.manifest.inputs] == [e.sha256 for e in local.manifest.inputs]


def test_a_fasttext_object_is_told_by_its_first_line(job, s3_bucket, tmp_path):
    # data.format=auto on s3://.../train.ft.txt.bz2: the first line is read from the object (decompressed).
    import bz2

    path = tmp_path / "train.ft.txt.bz2"
    path.write_bytes(
        bz2.compress(
            "".join(f"__label__{1 + i % 2} take {i} was {'great' if i % 2 else 'bad'}\n" for i in range(40)).encode()
        )
    )
    (url,) = _upload(s3_bucket, {"ft/train.ft.txt.bz2": path})
    remote = prepare(job(output_root=str(tmp_path / "out"), source="files", paths=(url,)))
    local = prepare(job(output_root=str(tmp_path / "local"), source="files", paths=(str(path),), format="fasttext"))
    assert remote.manifest.label_names == ["1", "2"]
    assert remote.manifest.content_digest == local.manifest.content_digest
    with pytest.raises(UserInputError, match=r"found \['\.txt\.bz2'\]\); a folder contributes its \.csv"):
        prepare(job(output_root=str(tmp_path / "out"), source="files", paths=(f"{s3_bucket}/ft/",)))
