"""Give the training job's MLflow user what it needs on a basic-auth MLflow server, as the admin.

    MLFLOW_TRACKING_URI=http://mlflow:5000 \
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \
    TRAINER_USERNAME=trainer TRAINER_PASSWORD=... \
    python infra/mlflow_bootstrap.py --experiment rnn-textcls --registered-model rnn-textcls

Why: with basic auth, whoever creates an experiment or a registered model owns it (MANAGE) and
everybody else gets `default_permission` (READ). If the admin (or anyone but the trainer) creates
them first, the trainer gets 403 on runs and model versions. This script makes the order irrelevant:
it creates the trainer user (or resets its password to TRAINER_PASSWORD), creates the experiment and
the registered model when missing, and grants the trainer MANAGE on both. Safe to run again.

Runs as the Kubernetes Job in infra/k8s/mlflow-bootstrap.yaml (from the MLflow server image, which
holds this file) and from infra/local_stack.sh. Needs only `mlflow` (the [auth] extra's client).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request

from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

MANAGE = "MANAGE"


def wait_for_server(uri: str, timeout_s: float) -> None:
    """Poll /health (exempt from auth) so the Job can start before the Deployment is ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"mlflow_bootstrap: {uri}/health did not answer within {timeout_s:.0f}s")
        time.sleep(2)


def ensure_user(auth: AuthServiceClient, username: str, password: str) -> str:
    try:
        auth.get_user(username)
    except RestException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(username, password)
        return "created"
    # The Secret is the source of truth: a rotated password takes effect on the next run.
    auth.update_user_password(username, password)
    return "exists, password set from the Secret"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)


def ensure_manage(auth: AuthServiceClient, username: str, resource_type: str, resource_id: str) -> None:
    """Grant MANAGE; an existing lower grant (e.g. READ) is replaced, since grant refuses duplicates."""
    if auth.get_user_permission(username, resource_type, resource_id).permission == MANAGE:
        return
    try:
        auth.grant_user_permission(username, resource_type, resource_id, MANAGE)
    except RestException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, MANAGE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="rnn-textcls", help="tracking.experiment_name of the job")
    p.add_argument("--registered-model", default="rnn-textcls", help="tracking.registered_model_name of the job")
    p.add_argument("--wait-seconds", type=float, default=300, help="how long to wait for the server")
    args = p.parse_args(argv)

    uri = os.environ["MLFLOW_TRACKING_URI"]  # the admin's credentials: MLFLOW_TRACKING_USERNAME/PASSWORD
    trainer, trainer_password = os.environ["TRAINER_USERNAME"], os.environ["TRAINER_PASSWORD"]
    wait_for_server(uri, args.wait_seconds)
    auth, client = AuthServiceClient(uri), MlflowClient(uri)

    print(f"user {trainer}: {ensure_user(auth, trainer, trainer_password)}")
    experiment_id = ensure_experiment(client, args.experiment)
    ensure_registered_model(client, args.registered_model)
    ensure_manage(auth, trainer, "experiment", experiment_id)
    ensure_manage(auth, trainer, "registered_model", args.registered_model)
    print(
        f"{trainer}: {MANAGE} on experiment {args.experiment} (id {experiment_id}) "
        f"and registered model {args.registered_model}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
