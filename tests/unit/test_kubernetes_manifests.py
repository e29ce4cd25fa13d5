"""deploy/kubernetes/: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict: no unknown
field), and consistent with the image and the CLI: probes on /healthz and /readyz, the journal on a persistent
volume where the image keeps it, a non-root pod, Services and the NetworkPolicy selecting the engine's pod."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import build_parser
from tests.support import require_part

try:
    import kubernetes_validate
except ImportError:  # the dev extra brings it
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest Kubernetes release still widely run here, and the newest schema shipped
JOURNAL_DIR = "/var/lib/failover-engine"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(version: str) -> None:
    """Each document validates strictly (unknown fields are errors) against the schema of that release."""
    if kubernetes_validate is None:
        require_part("kubernetes-validate", False, "python3 -m pip install -e '.[dev]'")
    assert kubernetes_validate is not None
    errors = []
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                          f"{'.'.join(str(p) for p in exc.path)}")
    assert errors == []


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every file in the directory."""
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_statefulset_keeps_the_journal_on_a_persistent_volume() -> None:
    """One replica, a volume claim template mounted where the image keeps the journal, the config read-only."""
    sts = one("StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1, "never two engines writing one journal"
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]]["mountPath"] == JOURNAL_DIR
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf'^VOLUME \["{JOURNAL_DIR}"\]', dockerfile, flags=re.MULTILINE)
    args = build_parser().parse_args(container["args"])
    assert args.command == "run"
    assert Path(args.config).parent.as_posix() == mounts["config"]["mountPath"] and mounts["config"]["readOnly"]


def test_probes_ask_healthz_and_readyz_on_the_api_port() -> None:
    """Liveness and startup ask /healthz (the loop ticks), readiness /readyz, on the port the image exposes."""
    (container,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == 8080
    assert re.search(r"^EXPOSE 8080\b", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)


def test_pod_runs_as_the_images_non_root_user_with_nothing_extra() -> None:
    """The image's uid 10001, non-root enforced, no privilege escalation, every capability dropped, a read-only
    root file system, the runtime's seccomp profile, no service account token."""
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert re.search(r"^USER 10001:10001$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    namespace = one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_services_and_network_policy_select_the_engine() -> None:
    """The governing Service is headless and named by the StatefulSet; every Service and the NetworkPolicy select
    its pod; the policy lets the API port in and states both directions."""
    sts = one("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [doc for _, doc in manifests() if doc["kind"] == "Service"]
    governing = [s for s in services if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert governing and governing[0]["spec"]["clusterIP"] == "None"
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    policy = one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [8080]
    assert all(doc["metadata"].get("namespace") == "failover-engine"
               for _, doc in manifests() if doc["kind"] != "Namespace")
