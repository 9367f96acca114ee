"""The cluster kit (cluster/) agrees with the code and the docs: every manifest and config loads, the
entrypoint module exists, the secret and its key variables match the READMEs and the example job,
the images match the Dockerfile, the head keeps idle workers, and the ports are the ones synth uses."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
CLUSTER_README = (CLUSTER / "README.md").read_text()
README = (ROOT / "README.md").read_text()
SECRET = "synth-keys"
CONFIG = "synth-config"
JOB_CONFIGMAP = "synth-job"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def one(name: str) -> dict[str, Any]:
    (doc,) = docs(name)
    return doc


def pods(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group, pod spec) of a RayCluster or RayJob, head first."""
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    out = [("head", spec["headGroupSpec"]["template"]["spec"])]
    return out + [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


KUBE = ("raycluster.yaml", "rayjob.yaml")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"synth:{VERSION}"
BASE = re.search(r"^FROM rayproject/ray:(\S+)-py(\d)(\d+)$", (CLUSTER / "Dockerfile").read_text(), re.M)


def job_key_variables() -> set[str]:
    job = yaml.safe_load((CLUSTER / "job.yaml").read_text())
    return {k["env"] for p in job["providers"] for k in p["keys"]}


def secret_literals(text: str) -> list[set[str]]:
    """The variables of each documented `kubectl create secret generic synth-keys ...` command."""
    text = text.replace("\\\n", " ").replace("#", " ")
    cmds = re.findall(rf"kubectl create secret generic {SECRET}((?: +--from-literal=\w+=\S+)+)", text)
    return [set(re.findall(r"--from-literal=(\w+)=", c)) for c in cmds]


def system_config(value: str) -> dict[str, Any]:
    """A --system-config value as the shell hands it to `ray start` (KubeRay and the launcher both
    paste it into a shell command)."""
    (word,) = shlex.split(value)
    return json.loads(word)


# what cluster/README.md tells users to start a head with
DOCUMENTED = system_config(re.search(r"--system-config=('[^']+')", CLUSTER_README).group(1))


def test_every_file_in_cluster_is_known_and_loads():
    kinds = {}
    for path in sorted(CLUSTER.glob("*.y*ml")):
        loaded = docs(path.name)
        assert loaded, path
        kinds[path.name] = [d.get("kind", "launcher" if "provider" in d else "job") for d in loaded]
    assert kinds == {
        "aws.yaml": ["launcher"],
        "config.yaml": ["ConfigMap"],
        "job.yaml": ["job"],
        "raycluster.yaml": ["RayCluster"],
        "rayjob.yaml": ["RayJob"],
    }


def test_images_are_the_dockerfile_image_on_the_ray_version_synth_supports():
    assert BASE, "cluster/Dockerfile must build on rayproject/ray:<version>-py<python>"
    ray_version, py = BASE.group(1), f"{BASE.group(2)}.{BASE.group(3)}"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_spec = next(d for d in deps["dependencies"] if d.startswith("ray["))
    assert ray_version in SpecifierSet(ray_spec.split("]", 1)[1].split(";")[0].split("#")[0].strip())
    assert py in SpecifierSet(deps["requires-python"])
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert "COPY jobs" in dockerfile and "COPY synth" in dockerfile and "pip install" in dockerfile
    for name in KUBE:
        doc = one(name)
        assert cluster_spec(doc)["rayVersion"] == ray_version, name
        for group, pod in pods(doc):
            assert [c["image"] for c in pod["containers"]] == [IMAGE], (name, group)
    assert f"docker build -f cluster/Dockerfile -t {IMAGE} ." in CLUSTER_README
    # the launcher runs the same Ray image the Dockerfile builds on, and installs synth into it
    aws = one("aws.yaml")
    assert aws["docker"]["image"] == f"rayproject/ray:{ray_version}-py{BASE.group(2)}{BASE.group(3)}"


def test_rayjob_entrypoint_is_a_module_of_the_image_reading_the_mounted_job_file():
    doc = one("rayjob.yaml")
    python, flag, module, job_path = shlex.split(doc["spec"]["entrypoint"])
    assert (python, flag) == ("python", "-m")
    assert (ROOT / Path(*module.split("."))).with_suffix(".py").is_file(), module
    assert f"COPY {module.split('.')[0]} " in (CLUSTER / "Dockerfile").read_text()
    spec = importlib.util.find_spec(module)  # importable as the image installs it
    assert spec is not None and spec.origin and Path(spec.origin).is_file()
    head = pods(doc)[0][1]
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if job_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == JOB_CONFIGMAP
    key = Path(job_path).name
    documented = f"kubectl create configmap {JOB_CONFIGMAP} --from-file={key}=cluster/job.yaml"
    assert documented in CLUSTER_README and documented in (CLUSTER / "rayjob.yaml").read_text()


def test_keys_come_from_the_documented_secret_and_match_the_example_job():
    variables = job_key_variables()
    # the README's job-file example names the same key variables as the cluster's job
    readme_job = yaml.safe_load(README.split("## A job file", 1)[1].split("```yaml", 1)[1].split("```", 1)[0])
    assert {k["env"] for p in readme_job["providers"] for k in p["keys"]} == variables
    assert SECRET in README and SECRET in CLUSTER_README
    for name in KUBE:
        for group, pod in pods(one(name)):
            for c in pod["containers"]:
                refs = c["envFrom"]
                assert {"secretRef": {"name": SECRET}} in refs and {"configMapRef": {"name": CONFIG}} in refs, group
        created = secret_literals((CLUSTER / name).read_text())
        assert created == [variables], name
    assert secret_literals(CLUSTER_README) and all(s == variables for s in secret_literals(CLUSTER_README))
    # the AWS secret documented in aws.yaml holds the same variables
    aws_text = (CLUSTER / "aws.yaml").read_text()
    (secret_json,) = re.findall(r"--secret-string '(\{.*?\})'", aws_text)
    assert set(json.loads(secret_json)) == variables


def test_the_example_job_loads_with_the_configmap_and_the_secret_variables(monkeypatch, tmp_path):
    from synth.api import load_job

    config = one("config.yaml")
    assert config["metadata"]["name"] == CONFIG
    for name, value in config["data"].items():
        monkeypatch.setenv(name, value)
    text = (CLUSTER / "job.yaml").read_text()
    needed = set(re.findall(r"\$\{(\w+)", text)) - {"job"}
    assert needed and needed <= set(config["data"]), "every ${VAR} of the job comes from the ConfigMap"
    for v in job_key_variables():
        monkeypatch.setenv(v, "sk-placeholder")
    monkeypatch.setenv("SYNTH_OUTPUT_URI", str(tmp_path))  # a reachable place instead of the bucket
    job = load_job(CLUSTER / "job.yaml")
    assert job.output.uri == f"{tmp_path}/{job.name}"
    assert config["data"]["SYNTH_OUTPUT_URI"].startswith("s3://")


def test_heads_keep_idle_workers_as_the_readme_says():
    assert DOCUMENTED == {"idle_worker_killing_time_threshold_ms": 600000}
    for name in KUBE:
        params = cluster_spec(one(name))["headGroupSpec"]["rayStartParams"]
        assert system_config(params["system-config"]) == DOCUMENTED, name
    (head,) = [c for c in one("aws.yaml")["head_start_ray_commands"] if "ray start --head" in c]
    assert system_config(re.search(r"--system-config=('[^']+')", head).group(1)) == DOCUMENTED
    sys.path.insert(0, str(CLUSTER))
    try:
        import local  # cluster/local.py

        assert local.SYSTEM_CONFIG == DOCUMENTED
    finally:
        sys.path.remove(str(CLUSTER))


def test_ports_are_the_ones_synth_and_the_docs_use():
    from synth.engine.jobs import DEFAULT_ADDRESS

    dashboard = urllib.parse.urlsplit(DEFAULT_ADDRESS).port
    for name in KUBE:
        doc = one(name)
        head = pods(doc)[0][1]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in head["ports"]}
        assert ports["dashboard"] == dashboard and ports["gcs-server"] == 6379, name
        assert cluster_spec(doc)["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    aws = one("aws.yaml")
    (head,) = [c for c in aws["head_start_ray_commands"] if "ray start --head" in c]
    (worker,) = [c for c in aws["worker_start_ray_commands"] if "ray start" in c]
    assert f"--dashboard-port={dashboard}" in head and "--port=6379" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    assert f"--address http://127.0.0.1:{dashboard}" in CLUSTER_README


def test_aws_cluster_autoscales_cpu_workers_and_installs_synth_with_keys_from_the_environment():
    aws = one("aws.yaml")
    assert aws["provider"]["type"] == "aws"
    types = aws["available_node_types"]
    assert aws["head_node_type"] in types
    workers = [t for n, t in types.items() if n != aws["head_node_type"]]
    assert workers and all(0 <= w["min_workers"] < w["max_workers"] <= aws["max_workers"] for w in workers)
    assert all("GPU" not in w["resources"] for w in workers)
    # synth is installed from the checkout the launcher copies to every node
    (mount,) = [dst for dst, src in aws["file_mounts"].items() if src == "."]
    assert any(re.search(rf"pip install .*{re.escape(mount)}\b", c) for c in aws["setup_commands"])
    # keys: fetched into an env file by the setup commands and sourced before every `ray start`
    (fetch,) = [c for c in aws["setup_commands"] if "fetch_keys.py" in c]
    assert (CLUSTER / "fetch_keys.py").is_file() and f"{mount}/cluster/fetch_keys.py" in fetch
    env_file = re.search(r"--out (\S+)", fetch).group(1)
    for cmd in (*aws["head_start_ray_commands"], *aws["worker_start_ray_commands"]):
        if "ray start" in cmd:
            assert f". {env_file}" in cmd and cmd.index(env_file) < cmd.index("ray start")


def test_raycluster_autoscales_its_cpu_workers():
    spec = one("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    for g in spec["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] > g["minReplicas"]


def test_no_key_value_is_written_anywhere_in_cluster():
    for path in CLUSTER.iterdir():
        text = path.read_text()
        assert not re.search(r"\b(sk-[A-Za-z0-9]{8,}|AIza[0-9A-Za-z_-]{20,})", text), path
        for _, value in re.findall(r"--from-literal=(\w+)=(\S+)", text):
            assert value == "...", path


def test_fetch_keys_renders_a_shell_env_file_and_refuses_bad_secrets():
    sys.path.insert(0, str(CLUSTER))
    try:
        import fetch_keys
    finally:
        sys.path.remove(str(CLUSTER))
    text = fetch_keys.render({"OPENAI_KEY_1": "sk-a'b c", "GEMINI_KEY": "g1"}, "secret s")
    assert text == "OPENAI_KEY_1='sk-a'\"'\"'b c'\nGEMINI_KEY=g1\n"
    for bad, message in (
        ([], "expected a JSON object"),
        ({"1BAD": "x"}, "'1BAD' is not an environment variable name"),
        ({"K": ""}, "the value of K must be a non-empty string"),
    ):
        with pytest.raises(fetch_keys.KeysError, match=re.escape(message)):
            fetch_keys.render(bad, "secret s")
