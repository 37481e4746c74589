"""Static checks of infra/: the Kubernetes manifests, the Dockerfile and their cross-references.

Nothing here talks to a cluster. Every YAML under infra/ is parsed and validated against schemas
nobody here wrote: RayJob and RayCronJob against KubeRay's own CRDs (v1.6.0 and v1.7.0, vendored in
tests/schemas/kuberay/) with jsonschema plus an unknown-field check, every core kind against the
Kubernetes 1.30-1.37 schemas with kubernetes-validate (strict). On top: the Pod Security Standard
"restricted" rules, leaked secrets, exposed Services, NetworkPolicies that really restrict the Ray and
MLflow ports, the MLflow start-up order, and entrypoints that name modules of this repository.
"""

from __future__ import annotations

import configparser
import copy
import functools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
DOCKERFILE = INFRA / "Dockerfile"
PLACEHOLDER = "REPLACE_ME"

# Every YAML file under infra/ and the kinds of its documents, in order. A new or removed
# manifest must be reflected here (and so reviewed against the checks below).
EXPECTED_KINDS: dict[str, list[str]] = {
    "k8s/mlflow.yaml": ["ConfigMap", "ConfigMap", "Service", "StatefulSet", "Service", "Deployment"],
    "k8s/mlflow-bootstrap.yaml": ["Job"],
    "k8s/networkpolicy.yaml": ["NetworkPolicy"] * 4,
    "k8s/raycronjob.yaml": ["RayCronJob"],
    "k8s/raycronjob-scoring.yaml": ["RayCronJob"],
    "k8s/rayjob.yaml": ["RayJob"],
    "k8s/secrets.example.yaml": ["Secret"] * 6,
}
EXPECTED_DOCUMENTS = 20

# Env/config names that carry credentials.
# Matched per name segment, so TOKENIZERS_PARALLELISM or KEYCLOAK_URL are not credentials.
SECRET_NAME_RE = re.compile(r"PASSW(OR)?D|(^|[_.-])(TOKEN|SECRET|KEY|APIKEY|CREDENTIALS?)([_.-]|$)", re.IGNORECASE)
# scheme://user:password@host, unless the password is only $(VAR) references expanded by the kubelet.
URI_CREDENTIALS_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@", re.IGNORECASE)
PYTHON_MODULE_RE = re.compile(r"\bpython(?:3(?:\.\d+)?)?\s+-m\s+([A-Za-z_][\w.]*)")
CRON_FIELD_INT = re.compile(r"^\d+$")

# KubeRay releases whose CRDs the RayJob/RayCronJob must satisfy (tests/schemas/kuberay/<version>/).
KUBERAY_VERSIONS = ("v1.6.0", "v1.7.0")
CRDS = REPO_ROOT / "tests" / "schemas" / "kuberay"
# Kubernetes minor versions the core kinds must validate against (kubernetes-validate ships their schemas).
KUBERNETES_VERSIONS = tuple(f"1.{minor}" for minor in range(30, 38))


# ----------------------------------------------------------------------------------------------
# loading helpers
# ----------------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml"})


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def docs_by_file() -> dict[str, list[dict[str, Any]]]:
    return {p.relative_to(INFRA).as_posix(): load_docs(p) for p in yaml_files()}


@pytest.fixture(scope="module")
def manifests(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every manifest except the secrets template."""
    return [(f, d) for f, ds in docs_by_file.items() if f != "k8s/secrets.example.yaml" for d in ds]


def one(docs_by_file, file: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs_by_file[file] if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{file}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) in a parsed YAML tree, containers included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def pyproject_pin(package: str) -> str:
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no {package}==X")


def ray_job_specs(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    """(label, RayJob spec) for the RayJob and the RayCronJobs' jobTemplates (training, scoring)."""
    rayjob = one(docs_by_file, "k8s/rayjob.yaml", "RayJob")
    cron = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    scoring = one(docs_by_file, "k8s/raycronjob-scoring.yaml", "RayCronJob")
    return [
        ("RayJob", rayjob["spec"]),
        ("RayCronJob.jobTemplate", cron["spec"]["jobTemplate"]),
        ("scoring RayCronJob.jobTemplate", scoring["spec"]["jobTemplate"]),
    ]


def ray_pod_templates(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cluster = spec["rayClusterSpec"]
    out = [("head", cluster["headGroupSpec"]["template"])]
    out += [(f"worker:{g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    return out


def pod_templates(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    """Every pod template in the manifests, with a label for messages."""
    out: list[tuple[str, dict[str, Any]]] = []
    for file, docs in docs_by_file.items():
        for d in docs:
            if d["kind"] in {"Deployment", "StatefulSet", "Job"}:
                out.append((f"{file}:{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]))
    for label, spec in ray_job_specs(docs_by_file):
        out += [(f"{label}:{name}", t) for name, t in ray_pod_templates(spec)]
        if "submitterPodTemplate" in spec:
            out.append((f"{label}:submitter", spec["submitterPodTemplate"]))
    return out


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def runtime_env(spec: dict[str, Any]) -> dict[str, Any]:
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(env, dict), "runtimeEnvYAML must be a YAML mapping"
    return env


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# detectors (with self-tests below, so a broken detector cannot pass silently)
# ----------------------------------------------------------------------------------------------


def literal_secret_findings(doc: Any, where: str) -> list[str]:
    """Places in a manifest where a credential is written out instead of referenced."""
    found: list[str] = []
    for path, node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("name"), str) and SECRET_NAME_RE.search(node["name"]):
            # an env var (or anything shaped like one) named like a credential
            if "value" in node:
                found.append(f"{where}{path}: {node['name']} has a literal value")
            elif "valueFrom" in node and "secretKeyRef" not in node["valueFrom"]:
                found.append(f"{where}{path}: {node['name']} is not read from a Secret")
        if isinstance(node, str):
            for m in URI_CREDENTIALS_RE.finditer(node):
                if re.sub(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", "", m.group(1)):
                    found.append(f"{where}{path}: URI with a literal password")
    if isinstance(doc, dict):
        if doc.get("kind") == "Secret":
            found.append(f"{where}: Secret objects belong only in secrets.example.yaml")
        if doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if SECRET_NAME_RE.search(key):
                    found.append(f"{where}.data.{key}: credential-like key in a ConfigMap")
                if isinstance(value, str) and re.search(
                    r"(?im)^\s*[\w.-]*(password|token|secret)[\w.-]*\s*[=:]\s*\S", value
                ):
                    found.append(f"{where}.data.{key}: credential-like assignment in a ConfigMap")
        spec = doc.get("spec") or {}
        for label, rj in [("spec", spec), ("spec.jobTemplate", spec.get("jobTemplate") or {})]:
            if isinstance(rj, dict) and "runtimeEnvYAML" in rj:
                env_vars = (yaml.safe_load(rj["runtimeEnvYAML"]) or {}).get("env_vars") or {}
                for k in env_vars:
                    if SECRET_NAME_RE.search(k):
                        found.append(f"{where}.{label}.runtimeEnvYAML: {k} (runtime envs are not secret)")
    return found


def python_modules(text: str) -> list[str]:
    return PYTHON_MODULE_RE.findall(text)


def test_literal_secret_detector_flags_bad_examples():
    bad = {
        "kind": "Deployment",
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "env": [
                                {"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"},
                                {
                                    "name": "AWS_ACCESS_KEY_ID",
                                    "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}},
                                },
                                {"name": "DB_URI", "value": "postgresql://u:hunter2@db:5432/x"},
                            ],
                        }
                    ]
                }
            }
        },
    }
    assert len(literal_secret_findings(bad, "bad")) == 3
    rayjob = {"kind": "RayJob", "spec": {"runtimeEnvYAML": "env_vars:\n  RAY_AUTH_TOKEN: abc\n"}}
    assert literal_secret_findings(rayjob, "rj")
    assert literal_secret_findings({"kind": "Secret", "stringData": {"a": "b"}}, "s")
    ok = {
        "kind": "Deployment",
        "env": [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "URI", "value": "postgresql+psycopg2://$(U):$(P)@db:5432/x"},
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://minio:9000"},
        ],
    }
    assert literal_secret_findings(ok, "ok") == []


@pytest.mark.parametrize(
    ("name", "is_secret"),
    [
        ("MLFLOW_TRACKING_PASSWORD", True),
        ("PGPASSWORD", True),
        ("RAY_AUTH_TOKEN", True),
        ("auth_token", True),
        ("AWS_ACCESS_KEY_ID", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("flask-secret-key", True),
        ("TOKENIZERS_PARALLELISM", False),
        ("MLFLOW_TRACKING_USERNAME", False),
        ("MLFLOW_S3_ENDPOINT_URL", False),
        ("RAY_AUTH_MODE", False),
    ],
)
def test_secret_name_regex(name, is_secret):
    assert bool(SECRET_NAME_RE.search(name)) is is_secret


def test_python_module_regex():
    assert python_modules("python -m jobs.run --config x.yaml") == ["jobs.run"]
    assert python_modules("cd /app && python3 -m jobs.promote a=1") == ["jobs.promote"]
    assert python_modules("ray job submit -- python script.py") == []


# ----------------------------------------------------------------------------------------------
# inventory
# ----------------------------------------------------------------------------------------------


def test_yaml_inventory(docs_by_file):
    assert sorted(docs_by_file) == sorted(EXPECTED_KINDS), "YAML files under infra/ changed"
    for file, kinds in EXPECTED_KINDS.items():
        assert [d.get("kind") for d in docs_by_file[file]] == kinds, file
    assert sum(len(ds) for ds in docs_by_file.values()) == EXPECTED_DOCUMENTS


def test_every_document_is_a_named_object(docs_by_file):
    seen: set[tuple[str, str]] = set()
    for file, docs in docs_by_file.items():
        for d in docs:
            assert isinstance(d, dict), file
            assert d.get("apiVersion") and d.get("kind"), f"{file}: document without apiVersion/kind"
            name = (d.get("metadata") or {}).get("name")
            if d["kind"] == "RayJob":  # `kubectl create` names each run: retries stay in one RayJob
                name = d["metadata"].get("generateName")
            assert name, f"{file}: {d['kind']} without metadata.name"
            assert "namespace" not in d["metadata"], f"{file}: {name} hard-codes a namespace; use kubectl -n"
            key = (d["kind"], name)
            if file != "k8s/secrets.example.yaml":
                assert key not in seen, f"duplicate {key}"
            seen.add(key)


# ----------------------------------------------------------------------------------------------
# RayJob / RayCronJob
# ----------------------------------------------------------------------------------------------


def _gpu(resources: dict[str, Any], part: str) -> int:
    return int(str((resources.get(part) or {}).get("nvidia.com/gpu", 0)))


DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def check_cleanup(label: str, spec: dict[str, Any]) -> None:
    """deletionRules, checked as KubeRay's validateDeletionConfiguration/validateDeletionRules do (the CRD's
    CEL rules are not evaluated by jsonschema): no shutdownAfterJobFinishes or TTL beside them, one rule
    per (condition, policy), TTLs non-decreasing Workers <= Cluster <= Self; and ours: every way a run
    ends (SUCCEEDED, FAILED, a deadline: jobDeploymentStatus Failed) deletes the cluster and the RayJob."""
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec, (
        f"{label}: KubeRay rejects shutdownAfterJobFinishes together with deletionRules"
    )
    rules = spec["deletionStrategy"]["deletionRules"]
    by_condition: dict[tuple[str, str], dict[str, int]] = {}
    for rule in rules:
        cond = rule["condition"]
        (key,) = {"jobStatus", "jobDeploymentStatus"} & set(cond)
        policies = by_condition.setdefault((key, cond[key]), {})
        assert rule["policy"] not in policies, f"{label}: duplicate rule {key}={cond[key]} {rule['policy']}"
        policies[rule["policy"]] = cond.get("ttlSeconds", 0)
    for condition in [("jobStatus", "SUCCEEDED"), ("jobStatus", "FAILED"), ("jobDeploymentStatus", "Failed")]:
        policies = by_condition.get(condition, {})
        assert {"DeleteCluster", "DeleteSelf"} <= set(policies), f"{label}: {condition} must delete cluster and self"
        assert policies["DeleteCluster"] <= 600, f"{label}: {condition}: an idle GPU cluster lingers"
        ttls = [policies[p] for p in DELETION_ORDER if p in policies]
        assert ttls == sorted(ttls), f"{label}: {condition}: TTLs must follow {DELETION_ORDER}"


def check_rayjob_spec(label: str, spec: dict[str, Any]) -> None:
    entry = spec.get("entrypoint")
    assert isinstance(entry, str) and entry.strip(), f"{label}: no entrypoint"
    argv = shlex.split(entry)
    assert argv[:3] == ["python", "-m", "jobs.run"], f"{label}: entrypoint must run jobs.run, got {argv[:3]}"
    assert argv[argv.index("--config") + 1] == "jobs/configs/embedded.yaml", label
    overrides = dict(a.split("=", 1) for a in argv[3:] if "=" in a)
    assert overrides.get("scaling.use_gpu") == "true", label
    # Object storage, not a shared volume: nodes share no filesystem.
    assert overrides.get("output_root", "").startswith("s3://"), label
    num_workers = int(overrides["scaling.num_workers"])
    assert num_workers == 2, label

    check_cleanup(label, spec)
    assert isinstance(spec.get("backoffLimit"), int) and spec["backoffLimit"] >= 0, f"{label}: backoffLimit"
    assert isinstance(spec.get("activeDeadlineSeconds"), int) and spec["activeDeadlineSeconds"] > 0, label
    # A run waiting for GPUs must not hold the 16 GiB head pod for hours.
    pre = spec.get("preRunningDeadlineSeconds")
    assert isinstance(pre, int) and 0 < pre <= 3600, f"{label}: preRunningDeadlineSeconds {pre}"
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "SidecarMode"}, label

    env = runtime_env(spec)
    assert isinstance(env.get("env_vars"), dict) and env["env_vars"], f"{label}: runtimeEnvYAML.env_vars"
    assert all(isinstance(v, str) for v in env["env_vars"].values()), f"{label}: env_vars values must be strings"
    assert env["env_vars"].get("MLFLOW_TRACKING_URI", "").startswith("http://mlflow:5000"), label
    # The schedule lease key (infra/README.md, "Runs never overlap"): one key for manual and nightly runs.
    assert env["env_vars"].get("RNN_SCHEDULE_NAME") == "rnn-textcls-train", f"{label}: RNN_SCHEDULE_NAME"

    cluster = spec["rayClusterSpec"]
    assert cluster.get("rayVersion") == pyproject_pin("ray"), f"{label}: rayVersion != pyproject's ray pin"
    assert cluster.get("enableInTreeAutoscaling") is False, label
    auth = cluster.get("authOptions") or {}
    assert auth.get("mode") == "token" and auth.get("secretName"), f"{label}: Ray token auth must be on"

    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", label
    params = head.get("rayStartParams")
    assert isinstance(params, dict) and params.get("dashboard-host"), f"{label}: head rayStartParams.dashboard-host"
    assert all(isinstance(v, str) for v in params.values()), f"{label}: rayStartParams values must be strings"

    groups = cluster.get("workerGroupSpecs")
    assert isinstance(groups, list) and groups, f"{label}: no worker group"
    total_gpus = 0
    for g in groups:
        assert g.get("groupName"), label
        assert isinstance(g.get("rayStartParams"), dict), f"{label}: {g['groupName']} needs rayStartParams"
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{label}: {g['groupName']} replicas"
        worker = g["template"]["spec"]["containers"][0]
        res = worker["resources"]
        assert _gpu(res, "limits") == _gpu(res, "requests"), f"{label}: GPU requests must equal limits"
        total_gpus += g["replicas"] * _gpu(res, "limits")
    assert total_gpus >= num_workers, f"{label}: {num_workers} GPU workers requested, {total_gpus} GPUs"

    for name, template in ray_pod_templates(spec):
        pod = template["spec"]
        c = pod["containers"][0]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set((c.get("resources") or {}).get(part) or {}), (
                f"{label}:{name}: {part} needs cpu and memory"
            )
        # output_root is object storage: every Ray pod gets its credentials from the Secret, none
        # needs a ReadWriteMany volume.
        env = {e["name"]: e for e in c.get("env", [])}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = (env.get(key, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            assert ref.get("name") == "object-store" and ref.get("key") == key, f"{label}:{name}: {key} from a Secret"
        assert not any("persistentVolumeClaim" in v for v in pod.get("volumes", [])), f"{label}:{name}: no PVC"
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{label}:{name}: runAsNonRoot"


def test_rayjob_spec(docs_by_file):
    doc = one(docs_by_file, "k8s/rayjob.yaml", "RayJob")
    assert doc["apiVersion"] == "ray.io/v1"
    check_rayjob_spec("RayJob", doc["spec"])


def test_raycronjob_spec(docs_by_file):
    doc = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5, "schedule must be a 5-field cron expression"
    minute, hour, dom, month, dow = fields
    assert CRON_FIELD_INT.match(minute) and int(minute) < 60, "nightly: one fixed minute"
    assert CRON_FIELD_INT.match(hour) and int(hour) < 24, "nightly: one fixed hour"
    assert (dom, month, dow) == ("*", "*", "*"), "nightly: every day"
    assert spec.get("suspend", False) is False
    check_rayjob_spec("RayCronJob.jobTemplate", spec["jobTemplate"])
    # No concurrencyPolicy in the RayCronJob API: the lease makes overlap harmless, the deadline bounds a run.
    assert spec["jobTemplate"]["activeDeadlineSeconds"] < 24 * 3600


def test_scoring_raycronjob_spec(docs_by_file):
    """Nightly batch scoring: jobs.predict from the day's drop folder into that day's output folder on
    object storage, after the training tick, on CPU workers, cleaned up as the training runs are."""
    doc = one(docs_by_file, "k8s/raycronjob-scoring.yaml", "RayCronJob")
    training = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    spec, label = doc["spec"], "scoring RayCronJob"
    minute, hour, dom, month, dow = spec["schedule"].split()
    assert (dom, month, dow) == ("*", "*", "*") and CRON_FIELD_INT.match(minute) and CRON_FIELD_INT.match(hour)
    assert int(hour) > int(training["spec"]["schedule"].split()[1]), "scoring runs after the nightly training"
    job = spec["jobTemplate"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.predict"], argv
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    day = "$(date -u +%Y-%m-%d)"
    # Folders on object storage (a multi-node cluster shares no filesystem), one output folder per day.
    assert flags["--input"].startswith("s3://") and flags["--input"].endswith(f"/{day}/"), flags
    assert flags["--output"].startswith("s3://") and flags["--output"].endswith(f"/{day}/"), flags
    assert flags["--model-uri"] == "models:/rnn-textcls@champion"
    check_cleanup(label, job)
    assert 0 < job["preRunningDeadlineSeconds"] <= 3600 and 0 < job["activeDeadlineSeconds"] < 24 * 3600
    env = runtime_env(job)["env_vars"]
    assert env.get("MLFLOW_TRACKING_URI", "").startswith("http://mlflow:5000") and "RNN_SCHEDULE_NAME" not in env
    cluster = job["rayClusterSpec"]
    assert cluster["rayVersion"] == pyproject_pin("ray") and cluster["authOptions"]["mode"] == "token"
    for name, template in ray_pod_templates(job):
        c = template["spec"]["containers"][0]
        assert not _gpu(c["resources"], "limits") and c["image"] == "rnn-textcls:0.1.0", f"{label}:{name}: CPU image"
        env = {e["name"]: e for e in c.get("env", [])}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "object-store", "key": key}, f"{label}:{name}"
    assert (
        sum(
            g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
            for g in cluster["workerGroupSpecs"]
        )
        >= 2
    ), "scoring actors need worker CPUs"
    # The pods are the training cluster's in all but size and image: the NetworkPolicies select them alike.
    assert (
        ray_pod_templates(job)[0][1]["metadata"]["labels"]
        == ray_pod_templates(training["spec"]["jobTemplate"])[0][1]["metadata"]["labels"]
    )


def test_raycronjob_runs_the_same_cluster_as_rayjob(docs_by_file):
    rayjob = dict(one(docs_by_file, "k8s/rayjob.yaml", "RayJob")["spec"])
    template = dict(one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")["spec"]["jobTemplate"])
    rayjob.pop("activeDeadlineSeconds")
    template.pop("activeDeadlineSeconds")
    assert template == rayjob, "raycronjob.yaml's jobTemplate drifted from rayjob.yaml's spec"


# ----------------------------------------------------------------------------------------------
# MLflow
# ----------------------------------------------------------------------------------------------


def test_mlflow_server_postgres_s3_basic_auth(docs_by_file):
    dep = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    argv = list(c.get("command", [])) + list(c.get("args", []))
    assert argv[:2] == ["mlflow", "server"], argv

    def opt(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    assert opt("--host") == "0.0.0.0"
    assert opt("--port") == "5000"
    assert opt("--app-name") == "basic-auth"
    assert (opt("--artifacts-destination") or "").startswith("s3://")
    assert "--no-serve-artifacts" not in argv

    env = env_of(c)
    # The backend store comes from MLFLOW_BACKEND_STORE_URI, on the command line only as a reference.
    assert opt("--backend-store-uri") in (None, "$(MLFLOW_BACKEND_STORE_URI)")
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://")), uri
    check_postgres_uri(docs_by_file, uri)
    check_libpq_credentials(c)

    for name in (
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"].startswith(("http://", "https://"))
    assert dep["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") is True

    svc = one(docs_by_file, "k8s/mlflow.yaml", "Service", "mlflow")
    assert selector_matches({"matchLabels": svc["spec"]["selector"]}, dep["spec"]["template"]["metadata"]["labels"])
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5000
    assert container_ports.get(port["targetPort"], port["targetPort"]) == 5000


def check_postgres_uri(docs_by_file, uri: str) -> None:
    """No credentials in the URI (libpq reads PGUSER/PGPASSWORD), and it names the PostgreSQL Service."""
    parts = urlsplit(uri)
    assert parts.username is None and parts.password is None, f"credentials in {uri}"
    db_svc = one(docs_by_file, "k8s/mlflow.yaml", "Service", parts.hostname)
    assert parts.port in [p["port"] for p in db_svc["spec"]["ports"]], uri


def check_libpq_credentials(container: dict[str, Any]) -> None:
    env = env_of(container)
    for name, key in (("PGUSER", "username"), ("PGPASSWORD", "password")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-postgres", "key": key}, (
            f"{container['name']}: {name} must come from Secret mlflow-postgres"
        )


def test_postgres_password_lives_in_one_secret(docs_by_file, manifests):
    """Only Secret mlflow-postgres holds it: nothing else references a password-like key for PostgreSQL,
    no Secret template has a database URI, and the auth database URI (a ConfigMap) has no credentials."""
    for secret in docs_by_file["k8s/secrets.example.yaml"]:
        if secret["metadata"]["name"] != "mlflow-postgres":
            for key, value in secret["stringData"].items():
                assert "postgres" not in f"{key}={value}".lower(), f"{secret['metadata']['name']}.{key}"
    auth = one(docs_by_file, "k8s/mlflow.yaml", "ConfigMap", "mlflow-auth-config")
    ini = configparser.ConfigParser()
    ini.read_string(auth["data"]["basic_auth.ini"])
    check_postgres_uri(docs_by_file, ini["mlflow"]["database_uri"])
    dep = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")
    (volume,) = dep["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == "mlflow-auth-config"
    refs = [node for _, doc in manifests for path, node in walk(doc) if path.endswith(".secretKeyRef")]
    assert [r for r in refs if r["key"] == "password"] and all(
        r["name"] == "mlflow-postgres" for r in refs if r["key"] == "password"
    )


def test_the_auth_app_caches_good_logins_briefly(docs_by_file):
    """Every request would otherwise re-check the scrypt password hash (~0.1 s of server CPU); a revoked
    password must stop working within minutes, so the cache's lifetime is bounded."""
    auth = one(docs_by_file, "k8s/mlflow.yaml", "ConfigMap", "mlflow-auth-config")
    ini = configparser.ConfigParser()
    ini.read_string(auth["data"]["basic_auth.ini"])
    assert 0 < ini["mlflow"].getint("auth_cache_ttl_seconds", 0) <= 300


def test_mlflow_waits_for_postgres_then_upgrades_the_schema(docs_by_file):
    """A newer MLflow image on an existing database migrates it (`mlflow db upgrade`) before the server
    starts, after PostgreSQL accepts connections; Recreate, so two server versions never run at once."""
    dep = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    wait, upgrade = pod["initContainers"]
    assert "pg_isready -h mlflow-postgres" in " ".join(wait["command"] + wait["args"]) and "until" in wait["args"][0]
    assert upgrade["command"] == ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    assert upgrade["image"] == pod["containers"][0]["image"], "the schema must match the server's MLflow"
    uri = env_of(upgrade)["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri == env_of(pod["containers"][0])["MLFLOW_BACKEND_STORE_URI"]["value"]
    check_libpq_credentials(upgrade)


def allowed_hosts(docs_by_file, namespace: str) -> list[str]:
    c = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    value = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].replace("$(POD_NAMESPACE)", namespace)
    return [h.strip() for h in value.split(",")]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("mlflow:5000", True),
        ("mlflow.rnn-textcls:5000", True),
        ("mlflow.rnn-textcls.svc:5000", True),
        ("mlflow.rnn-textcls.svc.cluster.local:5000", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("mlflow.evil.example:5000", False),
        ("mlflow.other-ns.svc:5000", False),
    ],
)
def test_mlflow_allowed_hosts(docs_by_file, host, allowed):
    """Checked with MLflow's own host-header matcher, the namespace expanded as the kubelet does."""
    assert is_allowed_host_header(allowed_hosts(docs_by_file, "rnn-textcls"), host) is allowed


def test_mlflow_bootstrap_job_grants_the_trainer(docs_by_file):
    job = one(docs_by_file, "k8s/mlflow-bootstrap.yaml", "Job", "mlflow-bootstrap")
    pod = job["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "/opt/rnn-textcls/mlflow_bootstrap.py"]
    assert pod["metadata"]["labels"].get("rnn-textcls/mlflow-client") == "true", "NetworkPolicy to port 5000"
    env = env_of(c)
    assert env["TRAINER_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-client"
    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]["key"] == "admin-username"
    server = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")["spec"]["template"]["spec"]
    assert c["image"] == server["containers"][0]["image"], "the script ships in the MLflow server image"
    copied = [a for ins, a in dockerfile_instructions() if ins == "COPY" and "mlflow_bootstrap.py" in a]
    assert copied and copied[0].split()[-1] == "/opt/rnn-textcls/mlflow_bootstrap.py"
    # the names it grants on are the job's
    job_cfg = yaml.safe_load((REPO_ROOT / "jobs" / "configs" / "embedded.yaml").read_text(encoding="utf-8"))
    tracking = {"experiment_name": "rnn-textcls", "registered_model_name": "rnn-textcls"} | (
        job_cfg.get("tracking") or {}
    )
    args = c["args"]
    assert args[args.index("--experiment") + 1] == tracking["experiment_name"]
    assert args[args.index("--registered-model") + 1] == tracking["registered_model_name"]


def test_postgres_statefulset_is_persistent(docs_by_file):
    sts = one(docs_by_file, "k8s/mlflow.yaml", "StatefulSet", "mlflow-postgres")
    assert sts["spec"]["volumeClaimTemplates"], "PostgreSQL data must be on a PVC"
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]


# ----------------------------------------------------------------------------------------------
# exposure and network
# ----------------------------------------------------------------------------------------------


def test_no_externally_exposed_services(manifests):
    for file, doc in manifests:
        for path, node in walk(doc):
            if isinstance(node, dict) and node.get("kind") == "Service":
                assert node.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", f"{file}{path}"
            if path.endswith(".serviceType"):
                assert node == "ClusterIP", f"{file}{path}: {node}"
            assert not path.endswith(".hostPort"), f"{file}{path}: hostPort exposes the pod on the node"
            if path.endswith(".hostNetwork"):
                assert node is not True, f"{file}{path}"
        assert doc["kind"] not in {"Ingress", "Gateway", "HTTPRoute"}, f"{file}: {doc['kind']}"


def _policies(docs_by_file) -> list[dict[str, Any]]:
    return list(docs_by_file["k8s/networkpolicy.yaml"])


def _admits(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (port, None) for p in ports)


@pytest.mark.parametrize(
    ("port", "pods"),
    [(8265, "ray-head"), (6379, "ray-head"), (5000, "mlflow")],
)
def test_network_policies_restrict_ports(docs_by_file, port, pods):
    if pods == "ray-head":
        labels = ray_pod_templates(ray_job_specs(docs_by_file)[0][1])[0][1]["metadata"]["labels"]
    else:
        labels = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    selecting = [
        p
        for p in _policies(docs_by_file)
        if selector_matches(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", [])
    ]
    assert selecting, f"no NetworkPolicy selects the pods serving {port}"
    admitting = [r for p in selecting for r in p["spec"].get("ingress", []) if _admits(r, port)]
    assert admitting, f"nothing may reach port {port} at all"
    for rule in admitting:
        peers = rule.get("from")
        assert peers, f"a rule admits port {port} from everywhere"
        for peer in peers:
            assert "ipBlock" not in peer, f"port {port}: ipBlock peer"
            sel = peer.get("podSelector")
            assert sel and (sel.get("matchLabels") or sel.get("matchExpressions")), (
                f"port {port}: peer without a pod label selector: {peer}"
            )
            if "namespaceSelector" in peer:
                assert peer["namespaceSelector"].get("matchLabels"), f"port {port}: any-namespace peer"


def test_default_deny_ingress(docs_by_file):
    assert any(
        p["spec"]["podSelector"] == {} and p["spec"].get("policyTypes") == ["Ingress"] and not p["spec"].get("ingress")
        for p in _policies(docs_by_file)
    )


def test_network_policy_peers_match_real_pods(docs_by_file):
    """Every same-namespace peer selector matches some pod template (catches label typos)."""
    templates = pod_templates(docs_by_file)
    for policy in _policies(docs_by_file):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    continue
                assert any(
                    selector_matches(peer["podSelector"], t.get("metadata", {}).get("labels", {})) for _, t in templates
                ), f"{policy['metadata']['name']}: {peer} matches no pod in infra/k8s"
        assert any(
            selector_matches(policy["spec"]["podSelector"], t.get("metadata", {}).get("labels", {}))
            for _, t in templates
        ), f"{policy['metadata']['name']} selects no pod"


# ----------------------------------------------------------------------------------------------
# secrets
# ----------------------------------------------------------------------------------------------


def test_no_literal_secrets_in_manifests(manifests):
    findings = [f for file, doc in manifests for f in literal_secret_findings(doc, file)]
    assert findings == []


def test_placeholders_only_in_secrets_example():
    offenders = [
        p.relative_to(REPO_ROOT).as_posix()
        for p in INFRA.rglob("*")
        if p.is_file() and p != SECRETS_EXAMPLE and PLACEHOLDER in p.read_text(encoding="utf-8", errors="ignore")
    ]
    assert offenders == []


def test_secrets_example_is_only_placeholders(docs_by_file):
    text = SECRETS_EXAMPLE.read_text(encoding="utf-8")
    assert "DO NOT APPLY" in text.upper()
    for secret in docs_by_file["k8s/secrets.example.yaml"]:
        name = secret["metadata"]["name"]
        assert "data" not in secret, f"{name}: use stringData placeholders, not base64 data"
        for key, value in secret["stringData"].items():
            if SECRET_NAME_RE.search(key) or key.endswith(".ini"):
                assert PLACEHOLDER in value, f"{name}.{key} must be a {PLACEHOLDER} placeholder"


def test_secret_references_exist_in_template(docs_by_file, manifests):
    defined = {s["metadata"]["name"]: set(s["stringData"]) for s in docs_by_file["k8s/secrets.example.yaml"]}
    refs: list[tuple[str, str | None, str]] = []
    for file, doc in manifests:
        for path, node in walk(doc):
            if path.endswith(".secretKeyRef"):
                refs.append((node["name"], node["key"], f"{file}{path}"))
            elif path.endswith(".secretRef"):
                refs.append((node["name"], None, f"{file}{path}"))
            elif path.endswith(".secret") and isinstance(node, dict) and "secretName" in node:
                for item in node.get("items") or [{"key": None}]:
                    refs.append((node["secretName"], item["key"], f"{file}{path}"))
            elif path.endswith(".authOptions") and node.get("secretName"):
                refs.append((node["secretName"], "auth_token", f"{file}{path}"))
    assert refs, "no Secret references found"
    for name, key, where in refs:
        assert name in defined, f"{where}: Secret {name} is not in secrets.example.yaml"
        assert key is None or key in defined[name], f"{where}: key {key} missing from Secret {name}"


# ----------------------------------------------------------------------------------------------
# entrypoints name real modules
# ----------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    out = []
    for item in logical:
        instr, _, args = item.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    return instrs[last_from:]


def test_entrypoint_modules_exist(manifests):
    commands: list[tuple[str, str]] = []
    for file, doc in manifests:
        for path, node in walk(doc):
            key = path.rsplit(".", 1)[-1]
            if key == "entrypoint" and isinstance(node, str):
                commands.append((f"{file}{path}", node))
            elif key in {"command", "args"} and isinstance(node, list):
                commands.append((f"{file}{path}", " ".join(map(str, node))))
    for ins, args in dockerfile_instructions():
        if ins in {"ENTRYPOINT", "CMD", "RUN"}:
            text = " ".join(json.loads(args)) if args.startswith("[") else args
            commands.append((f"Dockerfile {ins}", text))
    modules = [(where, m) for where, text in commands for m in python_modules(text)]
    assert {m for _, m in modules} >= {"jobs.run"}, "jobs.run is not run anywhere"
    for where, module in modules:
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{where}: `python -m {module}` but {path.relative_to(REPO_ROOT)} does not exist"


# ----------------------------------------------------------------------------------------------
# Dockerfile
# ----------------------------------------------------------------------------------------------


def test_dockerfile_runs_jobs_run_as_non_root():
    stage = final_stage()
    users = [args for ins, args in stage if ins == "USER"]
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0", ""}, f"final USER is {users[-1]}"
    if user.isdigit():
        assert int(user) == 1000
    entry = [args for ins, args in stage if ins == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["python", "-m", "jobs.run"]
    cmd = [args for ins, args in stage if ins == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["--config", "jobs/configs/embedded.yaml"]


def test_dockerfile_default_cmd_config_exists():
    cmd = json.loads([args for ins, args in final_stage() if ins == "CMD"][-1])
    assert (REPO_ROOT / cmd[cmd.index("--config") + 1]).is_file()


def test_dockerfile_cpu_default_cuda_by_build_arg_and_pins():
    instrs = dockerfile_instructions()
    args = dict(a.split("=", 1) for ins, a in instrs if ins == "ARG" and "=" in a)
    assert args["TORCH_INDEX"].rstrip("/").endswith("/cpu"), "CPU build must be the default"
    assert "BASE_IMAGE" in args
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["MLFLOW_VERSION"] == pyproject_pin("mlflow"), "MLflow server and client versions differ"

    stage = final_stage()
    assert "${BASE_IMAGE}" in stage[0][1], "final stage must be FROM ${BASE_IMAGE}"
    runs = [a for ins, a in stage if ins == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "--index-url" in r and "${TORCH_INDEX}" in r and "torch==" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install (\S+ )*\.(\s|$)", r))
    assert torch_at < project_at, "torch must be installed before the project"
    copies = [a for ins, a in stage if ins == "COPY"]
    assert any("pyproject.toml" in c for c in copies)


# ----------------------------------------------------------------------------------------------
# schemas nobody here wrote: KubeRay's CRDs, Kubernetes' OpenAPI (kubernetes-validate)
# ----------------------------------------------------------------------------------------------


@functools.cache
def crd_schema(version: str, kind: str) -> dict[str, Any]:
    """openAPIV3Schema of KubeRay's CRD for `kind`, API version ray.io/v1, at a KubeRay release."""
    path = CRDS / version / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind, path
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return served["schema"]["openAPIV3Schema"]


def unknown_fields(node: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the structural schema does not declare. The API server drops them silently (or rejects
    them with kubectl --validate=strict); jsonschema alone accepts them, since CRD schemas leave
    additionalProperties unset."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(node, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in node.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None:
                found.append(f"{path}.{key}")
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(node):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def crd_errors(doc: dict[str, Any], version: str) -> list[str]:
    schema = crd_schema(version, doc["kind"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    return errors + [f"{f}: unknown field" for f in unknown_fields(doc, schema)]


def kuberay_docs(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, ds in docs_by_file.items() for d in ds if d["apiVersion"].startswith("ray.io/")]


@pytest.mark.parametrize("version", KUBERAY_VERSIONS)
def test_ray_manifests_validate_against_kuberay_crds(docs_by_file, version):
    docs = kuberay_docs(docs_by_file)
    assert sorted(d["kind"] for _, d in docs) == ["RayCronJob", "RayCronJob", "RayJob"]
    for file, doc in docs:
        assert doc["apiVersion"] == "ray.io/v1", file
        assert crd_errors(doc, version) == [], f"{file} vs KubeRay {version}"


@pytest.mark.parametrize("version", KUBERAY_VERSIONS)
def test_crd_validation_catches_bad_manifests(docs_by_file, version):
    """The validator is not a no-op: a typo, a wrong type, a bad enum and an unknown field deep in a pod
    template are each reported."""
    good = one(docs_by_file, "k8s/rayjob.yaml", "RayJob")
    cases = {
        "concurrencyPolicy": lambda d: d["spec"].__setitem__("concurrencyPolicy", "Forbid"),
        "backoffLimit": lambda d: d["spec"].__setitem__("backoffLimit", "1"),
        "jobStatus": lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0]["condition"].__setitem__(
            "jobStatus", "DONE"
        ),
        "preRunningDeadlineSeconds": lambda d: d["spec"].__setitem__("preRunningDeadlineSeconds", 0),
        "secComp": lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
            "securityContext"
        ].__setitem__("secComp", {}),
        "policy": lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0].__setitem__("policy", "Delete"),
    }
    for field, breaks in cases.items():
        bad = copy.deepcopy(good)
        breaks(bad)
        errors = crd_errors(bad, version)
        assert any(field in e for e in errors), (field, errors)
    cron = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    bad = copy.deepcopy(cron)
    bad["spec"]["startingDeadlineSeconds"] = 60
    assert any("startingDeadlineSeconds" in e for e in crd_errors(bad, version))


def core_docs(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, ds in docs_by_file.items() for d in ds if not d["apiVersion"].startswith("ray.io/")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_manifests_validate_with_kubernetes_validate(docs_by_file, version):
    docs = core_docs(docs_by_file)
    assert len(docs) == EXPECTED_DOCUMENTS - 3
    for file, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']} vs Kubernetes {version}: {e}")


def test_kubernetes_validate_strict_catches_unknown_fields(docs_by_file):
    dep = copy.deepcopy(one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalaton"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBERNETES_VERSIONS[-1], strict=True)


# ----------------------------------------------------------------------------------------------
# Pod Security Standard "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
# ----------------------------------------------------------------------------------------------

# The standard's allowed volume types under "restricted".
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Baseline's allowed added capabilities; restricted allows only NET_BIND_SERVICE to be added back.
RESTRICTED_ADDABLE_CAPS = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The baseline and restricted controls of the Pod Security Standards (policy version "latest"),
    evaluated as the PodSecurity admission plugin does: a container-level setting overrides the pod's."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{flag}: true")
    for v in pod.get("volumes") or []:
        kind = (set(v) - {"name"}).pop()
        if kind not in RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {v['name']}: {kind}")
    for s in psc.get("sysctls") or []:
        if s["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctl {s['name']}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in list(pod.get("initContainers") or []) + list(pod["containers"]):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - RESTRICTED_ADDABLE_CAPS:
            out.append(f"{name}: adds capabilities {caps['add']}")
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            out.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount")
        if (sc.get("seLinuxOptions") or {}).get("type") not in (
            None,
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ):
            out.append(f"{name}: seLinuxOptions.type")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{name}: hostPort")
    return out


def test_every_pod_meets_the_restricted_pod_security_standard(docs_by_file):
    templates = pod_templates(docs_by_file)
    assert len(templates) == 12  # postgres, mlflow, bootstrap; (head, worker, submitter) x (RayJob, 2 RayCronJobs)
    found = {label: restricted_violations(t["spec"]) for label, t in templates}
    assert {k: v for k, v in found.items() if v} == {}


def test_no_service_account_token_in_pods(docs_by_file):
    """None of our pods calls the Kubernetes API (no Ray autoscaler: enableInTreeAutoscaling is false)."""
    for label, t in pod_templates(docs_by_file):
        assert t["spec"].get("automountServiceAccountToken") is False, label


def test_restricted_checker_flags_bad_pods():
    ok = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
    }
    assert restricted_violations(ok) == []
    breakers = [
        lambda p: p["securityContext"].pop("seccompProfile"),
        lambda p: p["securityContext"].pop("runAsNonRoot"),
        lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        lambda p: p["containers"][0]["securityContext"].update(runAsNonRoot=False),
        lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        lambda p: p.setdefault("initContainers", []).append({"name": "i"}),
        lambda p: p.update(hostNetwork=True),
    ]
    for breaks in breakers:
        bad = copy.deepcopy(ok)
        breaks(bad)
        assert restricted_violations(bad), bad


# ----------------------------------------------------------------------------------------------
# image layers and the lock file
# ----------------------------------------------------------------------------------------------

CODE_DIRS = ("schemas", "pipeline", "jobs")


def test_dockerfile_installs_dependencies_before_the_code():
    """A code change must not reinstall Ray, MLflow or torch: every dependency install comes before the
    first COPY of the code, and the code is installed with --no-deps."""
    stage = final_stage()
    code_at = min(i for i, (ins, a) in enumerate(stage) if ins == "COPY" and a.split()[-2] in CODE_DIRS)
    pip_runs = [(i, a) for i, (ins, a) in enumerate(stage) if ins == "RUN" and "pip install" in a]
    deps = [i for i, a in pip_runs if "-r /tmp/constraints.txt" in a]
    assert deps and deps[0] < code_at, "locked dependencies must be installed before the code is copied"
    after = [a for i, a in pip_runs if i > code_at]
    assert after and all("--no-deps" in a for a in after), after
    assert {a.split()[-2] for ins, a in stage if ins == "COPY"} >= set(CODE_DIRS)


def test_dockerfile_uses_buildkit_cache_mounts_and_the_lock_file():
    instrs = dockerfile_instructions()
    for ins, a in instrs:
        if ins == "RUN" and "pip install" in a:
            assert "--mount=type=cache,target=/root/.cache/pip" in a, a[:80]
            assert "/tmp/constraints.txt" in a or "${TORCH_INDEX}" in a or "--no-deps" in a, a[:80]
    assert not any(ins == "ENV" and "PIP_NO_CACHE_DIR" in a for ins, a in instrs), "defeats the cache mount"
    assert DOCKERFILE.read_text(encoding="utf-8").startswith("# syntax=docker/dockerfile:1.")


def test_dockerfile_checks_torch_cuda_build():
    torch_run = next(a for ins, a in final_stage() if ins == "RUN" and "${TORCH_INDEX}" in a)
    assert "torch.version.cuda" in torch_run


def test_constraints_pin_every_project_dependency():
    """infra/constraints.txt (infra/freeze_constraints.py) pins each runtime dependency of pyproject.toml,
    torch excepted (TORCH_VERSION/TORCH_INDEX), at a version pyproject allows."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (INFRA / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = re.sub(r"[-_.]+", "-", dep.name).lower()
        if name == "torch":
            assert name not in pins
            continue
        assert name in pins, f"constraints.txt lacks {name}: run python infra/freeze_constraints.py"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {dep}"


def test_vendored_crds_are_kuberays_unchanged():
    """Each vendored CRD has the git blob id that tests/schemas/kuberay/README.md records for its KubeRay tag
    (`git hash-object`), so a hand edit to a schema cannot make a manifest pass."""
    import hashlib

    table = (CRDS / "README.md").read_text(encoding="utf-8")
    recorded = dict(re.findall(r"\| `(v[\d.]+/ray\.io_\w+\.yaml)` \| `([0-9a-f]{40})` \|", table))
    expected = [f"{v}/ray.io_{kind}.yaml" for v in KUBERAY_VERSIONS for kind in ("rayjobs", "raycronjobs")]
    assert sorted(recorded) == sorted(expected)
    for rel, blob in recorded.items():
        data = (CRDS / rel).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, rel
    assert "Apache License" in (CRDS / "LICENSE").read_text()
