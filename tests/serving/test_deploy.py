"""deploy/digits.yaml: valid Kubernetes objects (checked offline) that probe BentoML's routes."""

from __future__ import annotations

from pathlib import Path

import pytest

kv = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

MANIFEST = Path(__file__).resolve().parents[2] / "deploy/digits.yaml"


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """The manifest's objects by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_every_object_passes_the_kubernetes_schema_strictly(objects) -> None:
    assert sorted(objects) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    for doc in objects.values():
        kv.validate(doc, kv.latest_version(), strict=True)  # raises, naming the bad field


def test_a_misspelt_field_is_caught(objects) -> None:
    bad = {**objects["Service"], "spec": {**objects["Service"]["spec"], "selectr": {}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_probes_requests_and_autoscaling_fit_together(objects) -> None:
    deployment, service, hpa = (
        objects[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler")
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000  # `bentoml serve`'s port
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])  # the HPA needs cpu
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
