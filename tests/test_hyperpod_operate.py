"""status / wait / logs of HyperPodPyTorchJobs against a stand-in Kubernetes API server (the real
kubernetes client talks to it over HTTP)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mtgrpo.errors import UserError
from mtgrpo.hyperpod import operate, verbs
from mtgrpo.operate.kube import connect
from stand_in import JSONHandler, stand_in

JOB = "qwen3-8b-hyperpod-0123456789"
REPO = Path(__file__).resolve().parents[1]
_PATHS = re.compile(r"^/apis?/(?:(?P<group>[^/]+)/)?(?P<version>v1\w*)/namespaces/(?P<ns>[^/]+)"
                    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?P<log>/log)?$")


def hp_job(name: str = JOB, status: dict | None = None, replicas: int = 2) -> dict:
    return {"apiVersion": "sagemaker.amazonaws.com/v1", "kind": "HyperPodPyTorchJob",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"nprocPerNode": "7", "replicaSpecs": [{"name": "pods",
                                                            "replicas": replicas}]},
            "status": status or {}}


def cond(kind: str, status: str = "True", reason: str | None = None,
         message: str | None = None) -> dict:
    out = {"type": kind, "status": status}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def pod(name: str, created: str, job: str = JOB) -> dict:
    return {"metadata": {"name": name, "namespace": "ml", "creationTimestamp": created,
                         "labels": {"HPJob": job}}}


class Cluster:
    """Jobs, pods and logs; ``on_poll`` runs before each job GET is answered (the test plays
    the operator between polls)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {("ml", JOB): hp_job()}
        self.pods = [pod(f"{JOB}-pods-0", "2026-12-01T10:00:00Z"),
                     pod(f"{JOB}-pods-1", "2026-12-01T10:00:00Z"),
                     pod("other-job-pods-0", "2026-12-01T10:00:00Z", job="other-job")]
        self.logs = {p["metadata"]["name"]: f"log of {p['metadata']['name']}\n"
                     for p in self.pods}
        self.containers: list[str] = []
        self.polls = 0
        self.on_poll = None
        self.forbidden: set[str] = set()


def handler(cluster: Cluster):
    class Handler(JSONHandler):
        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            match = _PATHS.match(url.path)
            route = match.groupdict() if match else {}
            ns, plural, name = route.get("ns"), route.get("plural"), route.get("name")
            if plural in cluster.forbidden:
                self.send_json(403, {"kind": "Status", "code": 403, "reason": "Forbidden"})
                return
            with cluster.lock:
                if plural == "hyperpodpytorchjobs" and route.get("group") == \
                        "sagemaker.amazonaws.com" and name:
                    cluster.polls += 1
                    if cluster.on_poll:
                        cluster.on_poll(cluster)
                    found = cluster.jobs.get((ns, name))
                elif plural == "pods" and not name:
                    key, value = query["labelSelector"][0].split("=", 1)
                    found = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                             "items": [p for p in cluster.pods if p["metadata"]["namespace"]
                                       == ns and p["metadata"]["labels"].get(key) == value]}
                elif plural == "pods" and route.get("log"):
                    cluster.containers.append(query["container"][0])
                    found = cluster.logs.get(name)
                else:
                    found = None
            if found is None:
                self.send_json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            elif isinstance(found, str):
                data = found.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_json(200, found)

    return Handler


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world = Cluster()
    with stand_in(handler(world)) as url:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": url}}],
                  "users": [{"name": "t", "user": {"token": "fake-token"}}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "t",
                                                            "namespace": "ml"}}]}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        world.kube = connect(str(tmp_path / "kubeconfig"))
        yield world


STATES = [
    ("no status yet", {}, "Pending"),
    ("created", {"conditions": [cond("Created")]}, "Pending"),
    ("running", {"conditions": [cond("Created"), cond("Running")]}, "Running"),
    ("restarting after a fault", {"conditions": [cond("Running", "False"),
                                                 cond("Restarting", reason="NodeFault")],
                                  "restartCount": 1}, "Restarting"),
    ("queued by Kueue", {"conditions": [cond("Suspended", reason="WorkloadInadmissible")]},
     "Suspended"),
    ("completed", {"conditions": [cond("Running", "False"), cond("Completed")]}, "Completed"),
    ("succeeded reads as completed", {"conditions": [cond("Succeeded")]}, "Completed"),
    ("failed wins", {"conditions": [cond("Running"), cond("Failed", reason="MaxRetries")]},
     "Failed"),
]


@pytest.mark.parametrize("status,expected", [c[1:] for c in STATES], ids=[c[0] for c in STATES])
def test_states_follow_the_health_check(status, expected):
    assert operate.state({"status": status})[0] == expected


def test_selectors():
    assert operate.job_name(f"HyperPodPyTorchJob/{JOB}") == JOB
    assert operate.job_name(f"hpjob/{JOB}") == JOB
    assert operate.job_name(JOB) is None and operate.job_name(f"trainjob/{JOB}") is None


def test_status_of_a_job(cluster, capsys):
    cluster.jobs[("ml", JOB)]["status"] = {"conditions": [cond("Running")], "restartCount": 2}
    assert verbs.status(cluster.kube, [f"hyperpodpytorchjob/{JOB}"]) == 0
    assert capsys.readouterr().out.strip() == \
        f"HyperPodPyTorchJob {JOB}: Running (Running (restart 2)); 2 nodes"
    with pytest.raises(UserError, match="hyperpodpytorchjob/nope: no HyperPodPyTorchJob"):
        verbs.status(cluster.kube, ["hyperpodpytorchjob/nope"])
    cluster.forbidden.add("hyperpodpytorchjobs")
    with pytest.raises(UserError, match="answered 403 Forbidden"):
        verbs.status(cluster.kube, [f"hyperpodpytorchjob/{JOB}"])


def test_status_of_a_recipe_file_not_applied(cluster, capsys):
    recipe = str(REPO / "recipes" / "qwen3-8b-hyperpod.yaml")
    assert verbs.status(cluster.kube, [recipe]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"HyperPodPyTorchJob qwen3-8b-hyperpod-[0-9a-f]{10}: NotApplied \(what "
                        r".*qwen3-8b-hyperpod\.yaml renders to now; not in namespace "
                        r"mtgrpo\)", line), line


def test_wait_returns_when_the_job_ends(cluster, capsys):
    def operator(c):
        if c.polls == 2:
            c.jobs[("ml", JOB)]["status"] = {"conditions": [cond("Running")]}
        if c.polls == 3:
            c.jobs[("ml", JOB)]["status"] = {"conditions": [cond("Completed", message="done")]}

    cluster.on_poll = operator
    code = verbs.wait(cluster.kube, f"hpjob/{JOB}", timeout_s=60, heartbeat_s=0.05)
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == f"HyperPodPyTorchJob {JOB} completed"
    assert [line.split(": ", 1)[1] for line in out.err.splitlines()] == [
        "Pending (waiting for the training operator (and Kueue) to start the pods)",
        "Running (Running)", "Completed (done)"]
    cluster.on_poll = None
    cluster.jobs[("ml", JOB)]["status"] = {"conditions": [cond("Failed", reason="MaxRetries",
                                                               message="3 restarts")]}
    assert verbs.wait(cluster.kube, f"hpjob/{JOB}", timeout_s=60, heartbeat_s=0.05) == 1
    assert "failed: MaxRetries: 3 restarts" in capsys.readouterr().out
    cluster.jobs[("ml", JOB)]["status"] = {}
    assert verbs.wait(cluster.kube, f"hpjob/{JOB}", timeout_s=0.2, heartbeat_s=0.05) == 124
    del cluster.jobs[("ml", JOB)]
    assert verbs.wait(cluster.kube, f"hpjob/{JOB}", timeout_s=1, heartbeat_s=0.05) == 1
    assert "is gone (deleted)" in capsys.readouterr().out


def test_logs_of_a_node_come_from_its_pod(cluster, capsys):
    assert verbs.logs(cluster.kube, f"hpjob/{JOB}") == 0
    assert capsys.readouterr().out == f"log of {JOB}-pods-0\n"
    assert verbs.logs(cluster.kube, f"hpjob/{JOB}", node=1) == 0
    assert capsys.readouterr().out == f"log of {JOB}-pods-1\n"
    assert cluster.containers == ["pytorch", "pytorch"]
    with pytest.raises(UserError, match="no pod of node 5"):
        verbs.logs(cluster.kube, f"hpjob/{JOB}", node=5)
    with pytest.raises(UserError, match="--follow: not served for HyperPod jobs yet"):
        verbs.logs(cluster.kube, f"hpjob/{JOB}", follow=True)
    cluster.forbidden.add("pods")
    with pytest.raises(UserError, match="RBAC to list pods"):
        verbs.logs(cluster.kube, f"hpjob/{JOB}")


def test_the_commands_reach_hyperpod_through_the_registry(cluster, capsys, tmp_path):
    from mtgrpo.cli import main

    kubeconfig = str(tmp_path / "kubeconfig")
    cluster.jobs[("ml", JOB)]["status"] = {"conditions": [cond("Completed", message="done")]}
    assert main(["status", f"hyperpodpytorchjob/{JOB}", "--kubeconfig", kubeconfig]) == 0
    assert capsys.readouterr().out.strip() == \
        f"HyperPodPyTorchJob {JOB}: Completed (done); 2 nodes"
    assert main(["wait", f"hpjob/{JOB}", "--kubeconfig", kubeconfig]) == 0
    assert capsys.readouterr().out.strip() == f"HyperPodPyTorchJob {JOB} completed"
    assert main(["logs", f"hpjob/{JOB}", "--node", "1", "--kubeconfig", kubeconfig]) == 0
    assert capsys.readouterr().out == f"log of {JOB}-pods-1\n"
