"""Static checks of infra/: the Kubernetes manifests, the Dockerfile and their cross-references.

Nothing here talks to a cluster: every YAML under infra/ is parsed with yaml.safe_load_all and
checked for the fields KubeRay / Kubernetes need, for leaked secrets, for exposed Services, for
NetworkPolicies that really restrict the Ray and MLflow ports, and for entrypoints that name
modules of this repository.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
DOCKERFILE = INFRA / "Dockerfile"
PLACEHOLDER = "REPLACE_ME"

# Every YAML file under infra/ and the kinds of its documents, in order. A new or removed
# manifest must be reflected here (and so reviewed against the checks below).
EXPECTED_KINDS: dict[str, list[str]] = {
    "k8s/mlflow.yaml": ["ConfigMap", "Service", "StatefulSet", "Service", "Deployment"],
    "k8s/networkpolicy.yaml": ["NetworkPolicy"] * 4,
    "k8s/raycronjob.yaml": ["RayCronJob"],
    "k8s/rayjob.yaml": ["RayJob"],
    "k8s/secrets.example.yaml": ["Secret"] * 5,
}
EXPECTED_DOCUMENTS = 16

# Env/config names that carry credentials.
# Matched per name segment, so TOKENIZERS_PARALLELISM or KEYCLOAK_URL are not credentials.
SECRET_NAME_RE = re.compile(
    r"PASSW(OR)?D|(^|[_.-])(TOKEN|SECRET|KEY|APIKEY|CREDENTIALS?)([_.-]|$)", re.IGNORECASE
)
# scheme://user:password@host, unless the password is only $(VAR) references expanded by the kubelet.
URI_CREDENTIALS_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@", re.IGNORECASE)
PYTHON_MODULE_RE = re.compile(r"\bpython(?:3(?:\.\d+)?)?\s+-m\s+([A-Za-z_][\w.]*)")
CRON_FIELD_INT = re.compile(r"^\d+$")

# Fields of KubeRay's RayCronJob spec (ray.io/v1, KubeRay 1.6+); the API server rejects others.
RAYCRONJOB_SPEC_FIELDS = {"schedule", "jobTemplate", "suspend", "timeZone"}


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
    found = [
        d for d in docs_by_file[file] if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
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
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no {package}==X")


def ray_job_specs(docs_by_file) -> list[tuple[str, dict[str, Any]]]:
    """(label, RayJob spec) for the RayJob and the RayCronJob's jobTemplate."""
    rayjob = one(docs_by_file, "k8s/rayjob.yaml", "RayJob")
    cron = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    return [("RayJob", rayjob["spec"]), ("RayCronJob.jobTemplate", cron["spec"]["jobTemplate"])]


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
            if d["kind"] in {"Deployment", "StatefulSet"}:
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
        if (
            isinstance(node, dict)
            and isinstance(node.get("name"), str)
            and SECRET_NAME_RE.search(node["name"])
        ):
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


def check_rayjob_spec(label: str, spec: dict[str, Any]) -> None:
    entry = spec.get("entrypoint")
    assert isinstance(entry, str) and entry.strip(), f"{label}: no entrypoint"
    argv = shlex.split(entry)
    assert argv[:3] == ["python", "-m", "jobs.run"], f"{label}: entrypoint must run jobs.run, got {argv[:3]}"
    assert argv[argv.index("--config") + 1] == "jobs/configs/embedded.yaml", label
    overrides = dict(a.split("=", 1) for a in argv[3:] if "=" in a)
    assert overrides.get("scaling.use_gpu") == "true", label
    assert overrides.get("output_root") == "/mnt/shared/rnn", label
    num_workers = int(overrides["scaling.num_workers"])
    assert num_workers == 2, label

    assert spec.get("shutdownAfterJobFinishes") is True, f"{label}: the ephemeral cluster must be deleted"
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        assert isinstance(spec.get(field), int) and spec[field] >= 0, f"{label}: {field}"
    assert isinstance(spec.get("activeDeadlineSeconds"), int) and spec["activeDeadlineSeconds"] > 0, label
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "SidecarMode"}, label

    env = runtime_env(spec)
    assert isinstance(env.get("env_vars"), dict) and env["env_vars"], f"{label}: runtimeEnvYAML.env_vars"
    assert all(isinstance(v, str) for v in env["env_vars"].values()), (
        f"{label}: env_vars values must be strings"
    )
    assert env["env_vars"].get("MLFLOW_TRACKING_URI", "").startswith("http://mlflow:5000"), label

    cluster = spec["rayClusterSpec"]
    assert cluster.get("rayVersion") == pyproject_pin("ray"), f"{label}: rayVersion != pyproject's ray pin"
    assert cluster.get("enableInTreeAutoscaling") is False, label
    auth = cluster.get("authOptions") or {}
    assert auth.get("mode") == "token" and auth.get("secretName"), f"{label}: Ray token auth must be on"

    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", label
    params = head.get("rayStartParams")
    assert isinstance(params, dict) and params.get("dashboard-host"), (
        f"{label}: head rayStartParams.dashboard-host"
    )
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
        # output_root must be on storage every Ray pod shares.
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert any(overrides["output_root"].startswith(m.rstrip("/") + "/") for m in mounts), (
            f"{label}:{name}: output_root {overrides['output_root']} is not on a mounted volume"
        )
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        shared = [m for m in c["volumeMounts"] if overrides["output_root"].startswith(m["mountPath"])][0]
        assert "persistentVolumeClaim" in volumes[shared["name"]], f"{label}:{name}: output_root not on a PVC"
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{label}:{name}: runAsNonRoot"


def test_rayjob_spec(docs_by_file):
    doc = one(docs_by_file, "k8s/rayjob.yaml", "RayJob")
    assert doc["apiVersion"] == "ray.io/v1"
    check_rayjob_spec("RayJob", doc["spec"])


def test_raycronjob_spec(docs_by_file):
    doc = one(docs_by_file, "k8s/raycronjob.yaml", "RayCronJob")
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    assert set(spec) <= RAYCRONJOB_SPEC_FIELDS, (
        f"fields KubeRay's RayCronJob does not have: {set(spec) - RAYCRONJOB_SPEC_FIELDS}"
    )
    fields = spec["schedule"].split()
    assert len(fields) == 5, "schedule must be a 5-field cron expression"
    minute, hour, dom, month, dow = fields
    assert CRON_FIELD_INT.match(minute) and int(minute) < 60, "nightly: one fixed minute"
    assert CRON_FIELD_INT.match(hour) and int(hour) < 24, "nightly: one fixed hour"
    assert (dom, month, dow) == ("*", "*", "*"), "nightly: every day"
    assert spec.get("suspend", False) is False
    check_rayjob_spec("RayCronJob.jobTemplate", spec["jobTemplate"])
    # No concurrencyPolicy in the RayCronJob API: a run must be stopped before the next tick.
    assert spec["jobTemplate"]["activeDeadlineSeconds"] < 24 * 3600


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
    names = [e["name"] for e in c["env"]]
    # The backend store comes from MLFLOW_BACKEND_STORE_URI, on the command line only as a reference.
    assert opt("--backend-store-uri") in (None, "$(MLFLOW_BACKEND_STORE_URI)")
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://")), uri
    # $(VAR) is expanded only from variables defined earlier in the list, and those must be Secrets.
    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", uri):
        assert names.index(ref) < names.index("MLFLOW_BACKEND_STORE_URI"), f"{ref} defined after use"
        assert "secretKeyRef" in env[ref]["valueFrom"], ref
    host = re.match(r"[^@]+@([^:/]+):(\d+)/", uri)
    assert host, uri
    db_svc = one(docs_by_file, "k8s/mlflow.yaml", "Service", host.group(1))
    assert int(host.group(2)) in [p["port"] for p in db_svc["spec"]["ports"]]

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
    assert selector_matches(
        {"matchLabels": svc["spec"]["selector"]}, dep["spec"]["template"]["metadata"]["labels"]
    )
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5000
    assert container_ports.get(port["targetPort"], port["targetPort"]) == 5000


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
        labels = one(docs_by_file, "k8s/mlflow.yaml", "Deployment", "mlflow")["spec"]["template"]["metadata"][
            "labels"
        ]
    selecting = [
        p
        for p in _policies(docs_by_file)
        if selector_matches(p["spec"]["podSelector"], labels)
        and "Ingress" in p["spec"].get("policyTypes", [])
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
        p["spec"]["podSelector"] == {}
        and p["spec"].get("policyTypes") == ["Ingress"]
        and not p["spec"].get("ingress")
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
                    selector_matches(peer["podSelector"], t.get("metadata", {}).get("labels", {}))
                    for _, t in templates
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
        if p.is_file()
        and p != SECRETS_EXAMPLE
        and PLACEHOLDER in p.read_text(encoding="utf-8", errors="ignore")
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
        assert path.is_file(), (
            f"{where}: `python -m {module}` but {path.relative_to(REPO_ROOT)} does not exist"
        )


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
    torch_at = next(
        i for i, r in enumerate(runs) if "--index-url" in r and "${TORCH_INDEX}" in r and "torch==" in r
    )
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install (\S+ )*\.(\s|$)", r))
    assert torch_at < project_at, "torch must be installed before the project"
    copies = [a for ins, a in stage if ins == "COPY"]
    assert any("pyproject.toml" in c for c in copies)
