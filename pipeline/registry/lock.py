"""A mutual-exclusion lock held in the MLflow model registry itself.

MLflow's alias update is last-writer-wins, so two promotion jobs racing could each decide
against a stale champion. Creating a registered model is atomic in every database-backed store
(the name is a primary key): `<model>.promotion-lock` exists exactly while one job holds the
lock. Its tags say who holds it and until when; a lock past its expiry (a killed job) is
broken by the next contender.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.errors import LockTimeout


def lock_name(model_name: str) -> str:
    return f"{model_name}.promotion-lock"


def already_exists(e: mlflow.exceptions.MlflowException) -> bool:
    return "RESOURCE_ALREADY_EXISTS" in str(e.error_code) or "already exists" in str(e).lower()


@contextmanager
def registry_lock(
    client: MlflowClient, model_name: str, ttl_s: float, wait_s: float, poll_s: float = 0.5
) -> Iterator[str]:
    """Hold the promotion lock of `model_name`; yields the owner id. Raises LockTimeout."""
    name = lock_name(model_name)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                name,
                tags={"owner": owner, "expires_at": f"{time.time() + ttl_s:.0f}"},
                description=f"promotion lock of {model_name}; held by {owner}",
            )
            break
        except mlflow.exceptions.MlflowException as e:
            if not already_exists(e):
                raise
        break_if_expired(client, name)
        if time.monotonic() > deadline:
            raise LockTimeout(
                f"promotion lock {name!r} still held after {wait_s}s; if its job is gone, "
                f"delete the registered model {name!r} or wait for promotion.lock_ttl_s"
            )
        time.sleep(poll_s)
    try:
        yield owner
    finally:
        try:
            held = client.get_registered_model(name)
            if held.tags.get("owner") == owner:
                client.delete_registered_model(name)
        except mlflow.exceptions.MlflowException:
            pass


def break_if_expired(client: MlflowClient, name: str) -> None:
    try:
        held = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        return  # released meanwhile
    if float(held.tags.get("expires_at", "inf")) < time.time():
        try:
            client.delete_registered_model(name)
        except mlflow.exceptions.MlflowException:
            pass
