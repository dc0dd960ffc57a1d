"""The docker-compose deployment, checked without a Docker engine: the compose file and the Dockerfile parse,
every file they build from or mount exists, the stages and commands they name are there, and the mounted
configuration passes `check-config`."""

import subprocess
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

from conftest import REPO, binary

COMPOSE = REPO / "docker-compose.yml"


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile(build):
    context = REPO / build["context"]
    path = context / build.get("dockerfile", "Dockerfile")
    assert path.is_file(), f"{path} (built by docker-compose.yml) does not exist"
    parser = DockerfileParser(path=str(path))
    return context, parser


def bind_mounts(service):
    """(host path, container path) of each bind mount: a volume whose source is a path, not a named volume."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((REPO / source, target))
    return mounts


def test_compose_has_minio_a_bucket_one_shot_the_service_and_an_optional_demo():
    services = compose()["services"]
    assert {"minio", "create-bucket", "anonymous-results", "demo"} <= set(services)
    service = services["anonymous-results"]
    assert service["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["demo"]["profiles"] == ["demo"], "the demo runs only when asked for"
    assert services["demo"]["depends_on"]["anonymous-results"]["condition"] == "service_healthy"
    # The health check asks the gRPC health service, through the binary itself.
    assert service["healthcheck"]["test"][:3] == ["CMD", "anonymous-results", "health"]
    assert any(port.endswith(":50051") for port in service["ports"])
    assert any(port.endswith(":9090") for port in service["ports"])


def test_every_file_compose_builds_from_or_mounts_exists():
    for name, service in compose()["services"].items():
        if "build" in service:
            context, parser = dockerfile(service["build"])
            stages = [line["value"].split()[-1] for line in parser.structure if line["instruction"] == "FROM"]
            target = service["build"].get("target")
            assert target is None or target in stages, f"{name}: no stage `{target}` in {stages}"
            for line in parser.structure:
                if line["instruction"] == "COPY" and "--from=" not in line["value"]:
                    for source in line["value"].split()[:-1]:
                        assert (context / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which does not exist"


def test_the_mounted_configuration_passes_check_config_and_matches_the_image():
    service = compose()["services"]["anonymous-results"]
    (config, target), = bind_mounts(service)
    checked = subprocess.run([binary(), "check-config", "--config", config], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert 'metrics_listen = "0.0.0.0:9090"' in checked.stdout
    assert 'listen = "0.0.0.0:50051"' in checked.stdout
    # The secret is redacted in what check-config prints.
    assert "minio-demo-secret" not in checked.stdout
    # The image reads its configuration where compose mounts it, and checks its health with it.
    _, parser = dockerfile(service["build"])
    commands = [line["value"] for line in parser.structure if line["instruction"] == "CMD"]
    assert commands and target in commands[0], f"the image's CMD {commands} reads another config file"
    assert target in service["healthcheck"]["test"]


def test_the_health_command_answers_for_a_running_service_and_fails_without_one(start, tmp_path):
    root = tmp_path / "results"
    service = start(f'[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = "{root}"\n')
    healthy = subprocess.run([binary(), "health", "--addr", service.address], capture_output=True, text=True)
    assert healthy.returncode == 0, healthy.stderr
    assert "SERVING" in healthy.stdout
    service.stop()
    gone = subprocess.run([binary(), "health", "--addr", service.address], capture_output=True, text=True)
    assert gone.returncode == 1
    assert "no health answer" in gone.stderr
