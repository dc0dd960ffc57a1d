"""The Kubernetes manifests (deploy/kubernetes), checked without a cluster (none runs here):

- each overlay renders with `kubectl kustomize` of Debian's kubectl 1.20 (kustomize v2.0.3, unpacked by
  scripts/test.sh) and of the system's kubectl where there is one (1.32, kustomize v5.5), to the same objects
  but for the hash kustomize puts in a generated ConfigMap's name;
- every object validates against the schemas of Kubernetes 1.37, strictly (`kubernetes-validate --strict`:
  no field the schema does not name), and by the `kubernetes-models` package's validate();
- checkov finds no failed check, and each check skipped says why (an annotation on the object);
- the objects are what the service needs: three replicas spread over nodes, a disruption budget, gRPC
  probes on the health service, a non-root user, a read-only root filesystem, no capabilities, requests and
  limits, the configuration from a ConfigMap and the tokens from a Secret as files (where the configuration
  reads them), the Services, the NetworkPolicy, and for a shared filesystem a ReadWriteMany claim mounted where
  the configuration says;
- each overlay's configuration passes `check-config`.

And the Dockerfile: checkov, and its runtime stage runs as a user that is not root.
"""

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from conftest import REPO, binary, missing

KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ["s3", "shared-filesystem"]
# A generated ConfigMap's name ends in a hash of its content, which kustomize versions compute differently.
HASHED = re.compile(r"^(anonymous-results-config)-[a-z0-9]{10}$")


def tool(path, what):
    if not path or not Path(path).is_file():
        missing(f"{what} is not installed (scripts/test.sh installs it)")
    return str(path)


def kubectls():
    """Every kubectl to render with: Debian's 1.20 (required), and the system's if there is one."""
    found = [tool(os.environ.get("ANONYMOUS_RESULTS_TEST_OLD_KUBECTL"), "Debian's kubectl 1.20")]
    system = shutil.which("kubectl")
    if system and Path(system).resolve() != Path(found[0]).resolve():
        found.append(system)
    return found


def render(kubectl, overlay):
    rendered = subprocess.run([kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True)
    assert rendered.returncode == 0, f"{kubectl} kustomize {overlay}: {rendered.stderr}"
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def without_hashes(value):
    """`value` with each generated ConfigMap's name, wherever it appears, without its hash."""
    if isinstance(value, dict):
        return {key: without_hashes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_hashes(item) for item in value]
    if isinstance(value, str):
        return HASHED.sub(r"\1", value)
    return value


@pytest.fixture(scope="module")
def objects():
    """Each overlay's objects as kustomize v2.0.3 renders them (checked against v5's below)."""
    return {overlay: render(kubectls()[0], overlay) for overlay in OVERLAYS}


def of_kind(docs, kind):
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs, kind, name=None):
    found = [doc for doc in of_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_same_objects_with_every_kustomize(overlay):
    renders = {kubectl: render(kubectl, overlay) for kubectl in kubectls()}
    if os.environ.get("CI") == "true" and len(renders) < 2:
        print("no system kubectl here: rendered with Debian's kubectl 1.20 only")
    first, *others = renders.values()
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])
    expected = sorted((without_hashes(doc) for doc in first), key=key)
    for kubectl, docs in list(renders.items())[1:]:
        assert sorted((without_hashes(doc) for doc in docs), key=key) == expected, kubectl
    assert {doc["kind"] for doc in first} >= {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "NetworkPolicy"
    }


def validators(tmp_path):
    validate = shutil.which("kubernetes-validate")
    if not validate:
        missing("kubernetes-validate is not installed (scripts/test-requirements.txt)")
    modules = os.environ.get("ANONYMOUS_RESULTS_TEST_NODE_MODULES")
    if not modules or not (Path(modules) / "kubernetes-models").is_dir():
        missing("the kubernetes-models npm package is not installed (scripts/test.sh installs it)")

    def check(docs):
        """The two validators' verdicts on `docs`: (passed, what they said)."""
        file = tmp_path / "objects.yaml"
        file.write_text(yaml.safe_dump_all(docs))
        strict = subprocess.run([validate, "--strict", "--quiet", str(file)], capture_output=True, text=True)
        models = subprocess.run(
            ["node", str(REPO / "tests/e2e/validate_kubernetes.mjs"), modules], input=json.dumps(docs), capture_output=True, text=True
        )
        said = f"kubernetes-validate: {strict.stdout}{strict.stderr}\nkubernetes-models: {models.stdout}{models.stderr}"
        return strict.returncode == 0, models.returncode == 0, said

    return check


def test_every_object_validates_against_current_kubernetes_schemas_field_by_field(objects, tmp_path):
    check = validators(tmp_path)
    for overlay, docs in objects.items():
        strict, models, said = check(docs)
        assert strict and models, f"{overlay}:\n{said}"
    # The validators see a field no schema names, and a value of the wrong type.
    deployment = json.loads(json.dumps(one(objects["s3"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    strict, _, said = check([deployment])
    assert not strict and "readinessProbes" in said, said
    deployment = json.loads(json.dumps(one(objects["s3"], "Deployment")))
    deployment["spec"]["replicas"] = "three"
    strict, models, said = check([deployment])
    assert not strict and not models, said


def checkov(*args):
    path = tool(os.environ.get("ANONYMOUS_RESULTS_TEST_CHECKOV"), "checkov")
    scanned = subprocess.run(
        [path, *args, "--output", "json", "--compact", "--skip-download"], capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    )
    assert scanned.returncode in (0, 1), scanned.stderr
    report = json.loads(scanned.stdout)
    return report if isinstance(report, dict) else {"results": {"failed_checks": [], "passed_checks": [], "skipped_checks": []}, "summary": {}}


def test_checkov_fails_no_check_and_every_skipped_one_says_why(objects, tmp_path):
    for overlay, docs in objects.items():
        file = tmp_path / f"{overlay}.yaml"
        file.write_text(yaml.safe_dump_all(docs))
        report = checkov("--file", str(file), "--framework", "kubernetes")
        results = report["results"]
        failed = [(check["check_id"], check["resource"]) for check in results["failed_checks"]]
        assert not failed, f"{overlay}: {failed}"
        assert len(results["passed_checks"]) > 50, f"{overlay}: checkov checked little: {report['summary']}"
        for check in results["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason) > 20, f"{overlay}: {check['check_id']} is skipped without saying why"
    # And it would see a container that may run as root.
    deployment = json.loads(json.dumps(one(objects["s3"], "Deployment")))
    del deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    file = tmp_path / "weakened.yaml"
    file.write_text(yaml.safe_dump(deployment))
    failed = {check["check_id"] for check in checkov("--file", str(file), "--framework", "kubernetes")["results"]["failed_checks"]}
    assert "CKV_K8S_22" in failed, failed


def test_the_image_runs_as_a_user_that_is_not_root_and_checkov_passes_the_dockerfile():
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    stages, current = {}, None
    for line in parser.structure:
        if line["instruction"] == "FROM":
            current = line["value"].split()[-1]
            stages[current] = []
        elif current:
            stages[current].append((line["instruction"], line["value"]))
    users = [value for instruction, value in stages["runtime"] if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), f"the runtime stage runs as {users}"
    created = " ".join(value for instruction, value in stages["runtime"] if instruction == "RUN")
    assert f"--uid 10001" in created and users[-1] in created, "the user is created with the uid the manifests run as"
    report = checkov("--file", str(REPO / "Dockerfile"), "--framework", "dockerfile")
    assert not report["results"]["failed_checks"], [check["check_id"] for check in report["results"]["failed_checks"]]
    assert "CKV_DOCKER_3" in {check["check_id"] for check in report["results"]["passed_checks"]}, "checkov's user check ran"


def config_of(docs):
    return tomllib.loads(one(docs, "ConfigMap")["data"]["config.toml"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_objects_are_what_the_service_needs(objects, overlay):
    docs = objects[overlay]
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {"anonymous-results"}
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"].items() <= labels.items()
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1 and budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), kind
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert env["PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__LISTEN"].endswith(f":{ports['grpc']}")
    assert env["PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__METRICS_LISTEN"].endswith(f":{ports['metrics']}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], f"{probe} asks the gRPC health service"

    # The configuration from the ConfigMap, where the arguments read it; the tokens and the commit secret from
    # the Secret, as files, where the configuration reads them.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    config_path = container["args"][container["args"].index("--config") + 1]
    assert volumes[mounts[config_path]["name"]]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    config = config_of(docs)
    auth = config["anonymous_results_service"]["auth"]
    for key in ("scheduler_token_file", "worker_token_file", "commit_secret_file"):
        folder = str(Path(auth[key]).parent)
        assert "secret" in volumes[mounts[folder]["name"]], f"auth.{key} is not read from a Secret's files"
    assert all(mount.get("readOnly") for path, mount in mounts.items() if path in (config_path, folder))

    services = {service["metadata"]["name"]: service for service in of_kind(docs, "Service")}
    grpc = [s for s in services.values() if any(p["targetPort"] == "grpc" for p in s["spec"]["ports"])]
    metrics = [s for s in services.values() if any(p["targetPort"] == "metrics" for p in s["spec"]["ports"])]
    assert len(grpc) == 1 and len(metrics) == 1 and grpc != metrics
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    admitted = {rule["ports"][0]["port"]: rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]}
    assert admitted == {ports["grpc"]: {"anonymous-results.io/client": "true"}, ports["metrics"]: {"app.kubernetes.io/name": "prometheus"}}

    scheduler = config["scheduler"]
    if overlay == "shared-filesystem":
        claim = one(docs, "PersistentVolumeClaim")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        path = scheduler["anonymous_results"]["local"]["path"]
        assert volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        group = int(config["anonymous_results_service"]["local"]["sink_group"])
        assert group in pod["securityContext"]["supplementalGroups"], "the replicas are in the workers' group"
    else:
        assert scheduler["anonymous_results"]["s3"]["url"].startswith("s3://")
        secret_env = [var for var in container["env"] if "valueFrom" in var]
        assert {var["name"] for var in secret_env} == {
            "PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__S3__AWS_ACCESS_KEY_ID",
            "PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__S3__AWS_SECRET_ACCESS_KEY",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlays_configuration_passes_check_config(objects, overlay, tmp_path):
    """With the Deployment's environment, and the Secret's files and the volume where this machine has them."""
    docs = objects[overlay]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PC_CUBLET__") and k != "RUST_LOG"}
    env.update({var["name"]: var["value"] for var in container["env"] if "value" in var})
    env.update({var["name"]: f"from-the-secret-{var['name'].lower()}" for var in container["env"] if "valueFrom" in var})
    for key, text in [("scheduler_token_file", "scheduler-token-0123456789"), ("worker_token_file", "worker-token-0123456789"), ("commit_secret_file", "c" * 40)]:
        file = tmp_path / key
        file.write_text(text + "\n")
        env[f"PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__AUTH__{key.upper()}"] = str(file)
    if overlay == "shared-filesystem":
        env["PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__LOCAL__PATH"] = str(tmp_path / "results")
        env["PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__LOCAL__SINK_GROUP"] = str(os.getgid())
    config = tmp_path / "config.toml"
    config.write_text(one(docs, "ConfigMap")["data"]["config.toml"])
    checked = subprocess.run([binary(), "check-config", "--config", str(config)], capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stderr
    assert 'listen = "0.0.0.0:50051"' in checked.stdout and 'metrics_listen = "0.0.0.0:9090"' in checked.stdout
    # The secret access key is redacted in what it prints (the key's id is not a secret).
    assert "from-the-secret-pc_cublet__scheduler__anonymous_results__s3__aws_secret_access_key" not in checked.stdout
