"""`mtgrpo status|wait|logs trainjob/NAME` against a stand-in Kubernetes API server that serves
a TrainJob, its pods and their logs (the real kubernetes client talks to it over HTTP)."""

from __future__ import annotations

import copy
import threading
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mtgrpo.cli import main
from mtgrpo.kubeflow.operate import state, train_job_name
from stand_in import JSONHandler, stand_in

JOB = "qwen3-1-7b-kubeflow-0123456789"
TRAIN_JOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/"


class Cluster:
    def __init__(self):
        self.job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                    "metadata": {"name": JOB, "namespace": "ml"},
                    "spec": {"trainer": {"numNodes": 2}}, "status": {}}
        self.pods = [
            {"metadata": {"name": f"{JOB}-node-0-0-abcde", "creationTimestamp":
                          "2026-12-01T10:00:00Z", "labels": {
                              "jobset.sigs.k8s.io/jobset-name": JOB,
                              "batch.kubernetes.io/job-completion-index": "0"}}},
            {"metadata": {"name": f"{JOB}-node-0-0-fghij", "creationTimestamp":
                          "2026-12-01T11:00:00Z", "labels": {  # after a JobSet restart
                              "jobset.sigs.k8s.io/jobset-name": JOB,
                              "batch.kubernetes.io/job-completion-index": "0"}}},
            {"metadata": {"name": f"{JOB}-node-0-1-klmno", "creationTimestamp":
                          "2026-12-01T11:00:00Z", "labels": {
                              "jobset.sigs.k8s.io/jobset-name": JOB,
                              "batch.kubernetes.io/job-completion-index": "1"}}}]
        self.logs = {p["metadata"]["name"]: f"log of {p['metadata']['name']}\n"
                     for p in self.pods}
        self.containers: list[str] = []
        self.polls = 0


def handler(cluster: Cluster):
    class Handler(JSONHandler):
        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path.startswith(TRAIN_JOBS):
                cluster.polls += 1
                if url.path[len(TRAIN_JOBS):] != JOB:
                    self.send_json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                else:
                    self.send_json(200, copy.deepcopy(cluster.job))
            elif url.path == "/api/v1/namespaces/ml/pods":
                wanted = dict(p.split("=", 1) for p in query["labelSelector"][0].split(","))
                items = [p for p in cluster.pods
                         if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
                self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                     "items": items})
            elif url.path.startswith("/api/v1/namespaces/ml/pods/") and \
                    url.path.endswith("/log"):
                cluster.containers.append(query["container"][0])
                data = cluster.logs[url.path.split("/")[-2]].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_json(404, {"kind": "Status", "code": 404})

    return Handler


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a project: the context's namespace
    world = Cluster()
    with stand_in(handler(world)) as url:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": url}}],
                  "users": [{"name": "t", "user": {"token": "fake-token"}}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "t",
                                                            "namespace": "ml"}}]}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        world.kubeconfig = str(tmp_path / "kubeconfig")
        yield world


def test_states_follow_the_health_check():
    job = {"status": {"conditions": [{"type": "Suspended", "status": "False"},
                                     {"type": "Failed", "status": "True",
                                      "reason": "DeadlineExceeded", "message": "too long"}]}}
    assert state(job) == ("Failed", "DeadlineExceeded: too long")
    assert state({"status": {"jobsStatus": [{"active": 2, "ready": 1}]}}) == (
        "Running", "2 pods active, 1 ready")
    assert state({})[0] == "Pending"
    assert train_job_name("TrainJob/x") == "x" and train_job_name("x") is None


def test_status_of_a_train_job(cluster, capsys):
    cluster.job["status"] = {"jobsStatus": [{"name": "node", "active": 2, "ready": 2}]}
    assert main(["status", f"trainjob/{JOB}", "--kubeconfig", cluster.kubeconfig]) == 0
    assert capsys.readouterr().out.strip() == \
        f"TrainJob {JOB}: Running (2 pods active, 2 ready); 2 nodes"
    assert main(["status", "trainjob/nope", "--kubeconfig", cluster.kubeconfig]) == 1
    assert "trainjob/nope: no TrainJob of that name" in capsys.readouterr().err


def test_wait_returns_when_the_train_job_ends(cluster, capsys):
    def finish():
        while cluster.polls < 2:
            threading.Event().wait(0.05)
        cluster.job["status"] = {"conditions": [{"type": "Complete", "status": "True",
                                                 "message": "done"}]}

    threading.Thread(target=finish, daemon=True).start()
    code = main(["wait", f"trainjob/{JOB}", "--heartbeat", "0.2", "--timeout", "60",
                 "--kubeconfig", cluster.kubeconfig])
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == f"TrainJob {JOB} completed"
    assert f"TrainJob {JOB}: Pending" in out.err
    cluster.job["status"] = {"conditions": [{"type": "Failed", "status": "True",
                                             "reason": "BackoffLimitExceeded"}]}
    assert main(["wait", f"trainjob/{JOB}", "--kubeconfig", cluster.kubeconfig]) == 1
    assert "failed: BackoffLimitExceeded" in capsys.readouterr().out
    cluster.job["status"] = {}
    assert main(["wait", f"trainjob/{JOB}", "--timeout", "1", "--heartbeat", "0.2",
                 "--kubeconfig", cluster.kubeconfig]) == 124


def test_logs_of_a_node_come_from_its_newest_pod(cluster, capsys):
    assert main(["logs", f"trainjob/{JOB}", "--kubeconfig", cluster.kubeconfig]) == 0
    assert capsys.readouterr().out == f"log of {JOB}-node-0-0-fghij\n"
    assert main(["logs", f"trainjob/{JOB}", "--node", "1",
                 "--kubeconfig", cluster.kubeconfig]) == 0
    assert capsys.readouterr().out == f"log of {JOB}-node-0-1-klmno\n"
    assert cluster.containers == ["node", "node"]
    assert main(["logs", f"trainjob/{JOB}", "--node", "5",
                 "--kubeconfig", cluster.kubeconfig]) == 1
    assert "no pod of node 5 (yet)" in capsys.readouterr().err
