"""The schedule lease: at most one run per schedule at a time, and one identity across a run's retries.

KubeRay does not stop runs of one schedule from overlapping (a RayCronJob has no concurrencyPolicy, and
after operator downtime it can create several RayJobs at once; a manual RayJob can coincide with a tick:
infra/README.md, "Runs never overlap"). So the job itself takes a lease named after its schedule
(`RNN_SCHEDULE_NAME`, set by infra/k8s/rayjob.yaml and raycronjob.yaml) before it starts work.

The lease is the registered model `<schedule>.schedule-lease`, created atomically like the promotion lock
(pipeline/registry/lock.py, whose primitives this reuses): it exists while a run holds it, its tags name
the holder, the MLflow run name and the holder's configuration fingerprint, and a heartbeat thread pushes
`expires_at` forward while the run is alive. A contender waits up to `wait_s` (by default one TTL, so a
KubeRay retry after a crash finds the crashed holder's lease expired) and then raises LeaseHeld.

Identity across retries: a run that ends with an exception leaves the lease behind, released (expired)
and marked failed, with its run name; a crashed run leaves it to expire. The next run of the same
schedule and configuration takes the lease over and gets that run name back (`Lease.resumed`), so it can
resume the same MLflow run and `<output_root>/ray_results/<run name>` checkpoints. A run that finishes
deletes the lease: the next tick starts fresh.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import UserInputError
from pipeline.registry.lock import already_exists, break_if_expired
from schemas.config import JobConfig

SCHEDULE_ENV = "RNN_SCHEDULE_NAME"

# Ray Jobs starts an entrypoint with its job config in this variable, `{"runtime_env": ..., "metadata":
# {"job_submission_id": <id>, ...}}` (ray/dashboard/modules/job/job_supervisor.py, _get_driver_env_vars;
# the names are ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR and
# ray.dashboard.modules.job.common.JOB_ID_METADATA_KEY). Ray sets no plain submission-id variable for the
# driver (KubeRay's RAY_JOB_SUBMISSION_ID is set in its submitter pod only). Read without importing Ray.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
SUBMISSION_ID_KEY = "job_submission_id"


def ray_submission_id() -> str | None:
    """The Ray Jobs submission id of this driver, or None outside Ray Jobs."""
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        value = json.loads(raw)["metadata"][SUBMISSION_ID_KEY]
    except (ValueError, TypeError, KeyError):
        return None
    return str(value) if value else None


def with_run_identity(cfg: JobConfig) -> JobConfig:
    """`cfg` with tracking.run_name defaulted to the Ray Jobs submission id: a job resubmitted under the same
    id (KubeRay's RayJob `spec.jobId`, `ray job submit --submission-id`) resumes that MLflow run and its
    `ray_results/<id>` checkpoints instead of starting over. A name the user set wins; outside Ray Jobs
    nothing changes. Raises UserInputError when the id cannot be a run name."""
    submission_id = None if cfg.tracking.run_name else ray_submission_id()
    if submission_id is None:
        return cfg
    try:
        tracking = type(cfg.tracking).model_validate({**cfg.tracking.model_dump(), "run_name": submission_id})
    except ValueError:
        raise UserInputError(
            f"the Ray job submission id {submission_id!r} cannot name the MLflow run (no '/', '\\', quotes "
            "or leading '.'); set tracking.run_name or submit with another --submission-id"
        ) from None
    return cfg.model_copy(update={"tracking": tracking})


class LeaseHeld(RuntimeError):
    """Another live run of the same schedule holds the lease; the message names it."""


@dataclass(frozen=True)
class Lease:
    """The lease a run holds: its registered-model name, the run name to use, whether that name is an
    unfinished earlier run's (resume it) or the new one the caller proposed."""

    name: str
    owner: str
    run_name: str
    resumed: bool


def lease_name(schedule: str) -> str:
    return f"{schedule}.schedule-lease"


def _tags(client: MlflowClient, name: str) -> dict[str, str] | None:
    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException:
        return None  # no lease


def _expired(tags: dict[str, str] | None) -> bool:
    return tags is not None and float(tags.get("expires_at", "inf")) < time.time()


def _left_unfinished(tags: dict[str, str] | None, fingerprint: str) -> str | None:
    """The run name of an expired lease (its holder failed or died) with the same configuration."""
    if not _expired(tags):
        return None
    return tags.get("run_name") if tags.get("fingerprint") == fingerprint else None


@contextmanager
def schedule_lease(
    client: MlflowClient,
    schedule: str,
    *,
    new_run_name: str,
    fingerprint: str,
    ttl_s: float = 300.0,
    wait_s: float | None = None,
    poll_s: float = 5.0,
) -> Iterator[Lease]:
    """Hold the lease of `schedule` for the block. `new_run_name` is used unless an unfinished run of the
    same `fingerprint` (a digest of the run's configuration) is resumed. Raises LeaseHeld after `wait_s`
    (default `ttl_s`) while another run holds it."""
    name = lease_name(schedule)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + (ttl_s if wait_s is None else wait_s)
    while True:
        held = _tags(client, name)
        previous = _left_unfinished(held, fingerprint)
        if _expired(held):  # judged on the tags just read: a lease expiring after that read is kept
            break_if_expired(client, name)  # for the next round, which then resumes its run name
        run_name = previous or new_run_name
        tags = {
            "owner": owner,
            "run_name": run_name,
            "fingerprint": fingerprint,
            "state": "running",
            "expires_at": f"{time.time() + ttl_s:.0f}",
        }
        try:
            client.create_registered_model(name, tags=tags, description=f"schedule lease of {schedule}")
            break
        except MlflowException as e:
            if not already_exists(e):
                raise
        if time.monotonic() > deadline:
            held = _tags(client, name) or {}
            raise LeaseHeld(
                f"schedule {schedule!r} is already running (holder {held.get('owner')}, MLflow run "
                f"{held.get('run_name')}, lease until {held.get('expires_at')}); this run exits without training. "
                f"If that run is gone, delete the registered model {name!r} or wait {ttl_s:.0f}s"
            )
        time.sleep(poll_s)
    lease = Lease(name=name, owner=owner, run_name=run_name, resumed=previous is not None)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(client, lease, ttl_s, stop), daemon=True)
    beat.start()
    try:
        yield lease
    except BaseException:
        stop.set()
        _release(client, lease, failed=True)
        raise
    else:
        stop.set()
        _release(client, lease, failed=False)
    finally:
        stop.set()
        beat.join()


def _heartbeat(client: MlflowClient, lease: Lease, ttl_s: float, stop: threading.Event) -> None:
    while not stop.wait(ttl_s / 3):
        if (_tags(client, lease.name) or {}).get("owner") != lease.owner:
            return  # taken over after we stalled past the TTL: never write into another run's lease
        try:
            client.set_registered_model_tag(lease.name, "expires_at", f"{time.time() + ttl_s:.0f}")
        except MlflowException:
            pass  # the next beat retries; the TTL covers a missed one


def _release(client: MlflowClient, lease: Lease, *, failed: bool) -> None:
    """Finished: delete the lease. Failed: keep it, expired and marked, so a retry resumes `run_name`."""
    if (_tags(client, lease.name) or {}).get("owner") != lease.owner:
        return
    try:
        if failed:
            client.set_registered_model_tag(lease.name, "state", "failed")
            client.set_registered_model_tag(lease.name, "expires_at", "0")
        else:
            client.delete_registered_model(lease.name)
    except MlflowException:
        pass  # an unreleased lease expires after its TTL


@contextmanager
def run_name_lease(client: MlflowClient, experiment: str, run_name: str, ttl_s: float = 60.0) -> Iterator[Lease]:
    """Hold `run_name` for the block: a second live job given the same tracking.run_name would train into
    the same MLflow run and Ray checkpoint folder, so it is refused at once. The schedule lease's rules
    apply: a crashed holder's lease expires after `ttl_s`, a failed one's at once (a rerun resumes).
    Raises UserInputError naming the holder and the fix."""
    try:
        with schedule_lease(
            client, f"{experiment}.run.{run_name}", new_run_name=run_name, fingerprint=run_name, ttl_s=ttl_s, wait_s=0
        ) as lease:
            yield lease
    except LeaseHeld:
        held = _tags(client, lease_name(f"{experiment}.run.{run_name}")) or {}
        raise UserInputError(
            f"tracking.run_name {run_name!r} is in use by a live job ({held.get('owner')}) of experiment "
            f"{experiment!r}; wait for it to end or set another tracking.run_name"
        ) from None
