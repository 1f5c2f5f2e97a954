"""Static checks of the container files, all offline: hadolint, shellcheck and Kubernetes' own
schemas (kubernetes-validate bundles them); plus what the Quix descriptors must say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    """From the venv running the tests (container.mk installs them), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: make test-container installs it")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/quix/Dockerfile"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = _run(_tool("hadolint"), "--failure-threshold", "info", str(REPO / dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [REPO / "docker/entrypoint.sh", *sorted((REPO / "tests/container").glob("*.sh"))]
    result = _run(_tool("shellcheck"), *map(str, scripts))
    assert result.returncode == 0, result.stdout + result.stderr


def _kubernetes() -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((REPO / "deploy/kubernetes.yaml").read_text(encoding="utf-8"))
    return {document["kind"]: document for document in documents if document}


def test_kubernetes_manifest_matches_the_schemas() -> None:
    result = _run(
        _tool("kubernetes-validate"), "--strict", "--quiet", str(REPO / "deploy/kubernetes.yaml")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_kubernetes()) == {"Deployment", "PersistentVolumeClaim", "Service"}


def test_kubernetes_probes_and_state() -> None:
    manifest = _kubernetes()
    deployment = manifest["Deployment"]["spec"]
    assert deployment["replicas"] == 1, "edit mode is a single editor"
    assert deployment["strategy"]["type"] == "Recreate"
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    # Liveness must answer while installs run: /-/healthy; readiness follows marimo: /-/ready.
    assert container["startupProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert container["ports"][0]["containerPort"] == 8080
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/app/state"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    claim = manifest["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    service = manifest["Service"]["spec"]
    assert service["ports"][0]["port"] == 80
    assert service["selector"] == deployment["selector"]["matchLabels"]


def test_kubernetes_run_mode_variant() -> None:
    path = REPO / "deploy/kubernetes-run.yaml"
    result = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    documents = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    manifest = {document["kind"]: document for document in documents if document}
    assert set(manifest) == {"Deployment", "PersistentVolumeClaim", "Service"}
    deployment = manifest["Deployment"]["spec"]
    assert deployment["replicas"] > 1
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = deployment["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["ORCHESTRATOR_MARIMO_MODE"] == "run"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert manifest["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    service = manifest["Service"]["spec"]
    assert service["sessionAffinity"] == "ClientIP", "a viewer's kernel lives in one replica"
    assert service["selector"] == deployment["selector"]["matchLabels"]


def test_quix_library_json() -> None:
    library = json.loads((REPO / "examples/quix/library.json").read_text(encoding="utf-8"))
    settings = library["DeploySettings"]
    assert settings["PublicAccess"] is True
    assert settings["State"]["Enabled"] is True and settings["State"]["Size"] > 0
    assert settings["Network"]["Ports"] == [{"Port": 80, "TargetPort": 8080}]
    assert settings["plugin"]["embeddedView"]["enabled"] is True
    assert (REPO / "examples/quix" / library["EntryPoint"]).is_file()
    assert (REPO / "examples/quix" / library["DefaultFile"]).is_file()
    icon = REPO / "examples/quix" / library["IconFile"]
    assert icon.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_quix_yaml() -> None:
    document = yaml.safe_load((REPO / "examples/quix/quix.yaml").read_text(encoding="utf-8"))
    (deployment,) = document["deployments"]
    assert deployment["publicAccess"]["enabled"] is True
    assert deployment["state"]["enabled"] is True and deployment["state"]["size"] > 0
    assert deployment["network"]["ports"] == [{"port": 80, "targetPort": 8080}]
    assert deployment["plugin"]["embeddedView"]["enabled"] is True
    app = yaml.safe_load((REPO / "examples/quix/app.yaml").read_text(encoding="utf-8"))
    assert app["name"] == deployment["application"]
    assert (REPO / "examples/quix" / app["dockerfile"]).is_file()
