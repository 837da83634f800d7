"""`mtgrpo status|wait|logs trainjob/NAME` against a stand-in Kubernetes API server that serves
a TrainJob, its pods and their logs (the real kubernetes client talks to it over HTTP)."""

from __future__ import annotations

import copy
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mtgrpo.cli import main
from mtgrpo.kubeflow.operate import state, train_job_name
from stand_in import JSONHandler, stand_in

JOB = "qwen3-1-7b-kubeflow-0123456789"
REPO = Path(__file__).resolve().parents[1]


def stamp(ns: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as the kubelet's timestamps=true."""
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
    frac = f"{ns % 10**9:09d}".rstrip("0")
    return base + (f".{frac}" if frac else "") + "Z"


def pod(name: str, rank: int, created: str, job: str = JOB, namespace: str = "ml") -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                         "labels": {"jobset.sigs.k8s.io/jobset-name": job,
                                    "batch.kubernetes.io/job-completion-index": str(rank)}}}


class Cluster:
    """TrainJobs, Katib Experiments, pods and their logs, by namespace; the tests play the
    controllers: ``script`` steps run one per TrainJob GET (before it is answered), so a test
    changes the world between the follower's polls without sleeping."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {("ml", JOB): train_job(JOB)}
        self.experiments: dict[tuple[str, str], dict] = {}
        self.pods = [pod(f"{JOB}-node-0-0-abcde", 0, "2026-12-01T10:00:00Z"),
                     pod(f"{JOB}-node-0-0-fghij", 0, "2026-12-01T11:00:00Z"),  # a restart
                     pod(f"{JOB}-node-0-1-klmno", 1, "2026-12-01T11:00:00Z")]
        self.logs: dict[str, list[tuple[int, str]]] = {}
        for p in self.pods:
            self.write(p["metadata"]["name"], f"log of {p['metadata']['name']}")
        self.containers: list[str] = []
        self.log_queries: list[dict] = []
        self.polls = 0
        self.script: list = []
        self.forbidden: set[str] = set()  # "pods": RBAC refuses listing pods
        self.fail_next: list[int] = []  # statuses the next TrainJob GETs answer instead

    def write(self, pod_name: str, *lines: str, same_time: bool = False) -> None:
        now = time.time_ns()
        entries = self.logs.setdefault(pod_name, [])
        for i, line in enumerate(lines):
            entries.append((now if same_time else now + i, line))

    def replace(self, old: str, new: dict) -> None:
        self.pods = [p for p in self.pods if p["metadata"]["name"] != old] + [new]

    def log_text(self, pod_name: str, query: dict) -> str:
        entries = self.logs[pod_name]
        if "sinceSeconds" in query:
            start = time.time_ns() - int(query["sinceSeconds"][0]) * 10**9
            entries = [e for e in entries if e[0] >= start]
        with_stamps = query.get("timestamps", ["false"])[0].lower() in ("true", "1")  # ParseBool
        return "".join((f"{stamp(ns)} " if with_stamps else "") + text + "\n"
                       for ns, text in entries)


def train_job(name: str, namespace: str = "ml", nodes: int = 2) -> dict:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"trainer": {"numNodes": nodes}}, "status": {}}


COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}
_PATHS = re.compile(r"^/apis?/(?:(?P<group>[^/]+)/)?(?P<version>v1\w*)/namespaces/(?P<ns>[^/]+)"
                    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?P<log>/log)?$")


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
                failing = plural == "trainjobs" and name and cluster.fail_next
                status = cluster.fail_next.pop(0) if failing else None
                if status:
                    found = "fail"
                elif plural == "trainjobs" and name:
                    cluster.polls += 1
                    if cluster.script:
                        cluster.script.pop(0)(cluster)
                    found = copy.deepcopy(cluster.jobs.get((ns, name)))
                elif plural == "experiments" and name:
                    found = copy.deepcopy(cluster.experiments.get((ns, name)))
                elif plural == "pods" and not name:
                    wanted = dict(p.split("=", 1)
                                  for p in query["labelSelector"][0].split(","))
                    found = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                             "items": [p for p in cluster.pods
                                       if p["metadata"]["namespace"] == ns
                                       and all(p["metadata"]["labels"].get(k) == v
                                               for k, v in wanted.items())]}
                elif plural == "pods" and route.get("log"):
                    cluster.containers.append(query["container"][0])
                    cluster.log_queries.append({k: v[0] for k, v in query.items()})
                    found = None if name not in cluster.logs else \
                        cluster.log_text(name, query)
                else:
                    found = None
            if found == "fail":
                self.send_json(status, {"kind": "Status", "code": status,
                                        "reason": "ServiceUnavailable"})
            elif found is None:
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
    cluster.jobs[("ml", JOB)]["status"] = {"jobsStatus": [{"name": "node", "active": 2,
                                                           "ready": 2}]}
    assert main(["status", f"trainjob/{JOB}", "--kubeconfig", cluster.kubeconfig]) == 0
    assert capsys.readouterr().out.strip() == \
        f"TrainJob {JOB}: Running (2 pods active, 2 ready); 2 nodes"
    assert main(["status", "trainjob/nope", "--kubeconfig", cluster.kubeconfig]) == 1
    assert "trainjob/nope: no TrainJob of that name" in capsys.readouterr().err


def test_wait_returns_when_the_train_job_ends(cluster, capsys):
    def finish():
        while cluster.polls < 2:
            threading.Event().wait(0.05)
        cluster.jobs[("ml", JOB)]["status"] = {"conditions": [{"type": "Complete", "status": "True",
                                                 "message": "done"}]}

    threading.Thread(target=finish, daemon=True).start()
    code = main(["wait", f"trainjob/{JOB}", "--heartbeat", "0.2", "--timeout", "60",
                 "--kubeconfig", cluster.kubeconfig])
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == f"TrainJob {JOB} completed"
    assert f"TrainJob {JOB}: Pending" in out.err
    cluster.jobs[("ml", JOB)]["status"] = {"conditions": [{"type": "Failed", "status": "True",
                                             "reason": "BackoffLimitExceeded"}]}
    assert main(["wait", f"trainjob/{JOB}", "--kubeconfig", cluster.kubeconfig]) == 1
    assert "failed: BackoffLimitExceeded" in capsys.readouterr().out
    cluster.jobs[("ml", JOB)]["status"] = {}
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


def logs(cluster, *args):
    return main(["logs", *args, "--poll", "0.01", "--kubeconfig", cluster.kubeconfig])


def test_follow_prints_every_line_once_and_ends_with_the_job(cluster, capsys):
    newest = f"{JOB}-node-0-0-fghij"
    cluster.write(newest, "step 1")

    def grow(c):  # two lines with the very same timestamp: the overlap drops neither
        c.write(newest, "step 2a", "step 2b", same_time=True)

    def finish(c):  # written as the job ends: only the read after the end gets it
        c.jobs[("ml", JOB)]["status"] = COMPLETE
        c.write(newest, "saved the model")

    cluster.script = [lambda c: None, lambda c: None, grow, lambda c: None, finish]
    assert logs(cluster, f"trainjob/{JOB}", "--follow") == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"log of {newest}", "step 1", "step 2a", "step 2b",
                                    "saved the model"]
    assert f"following pod {newest} (node 0)" in out.err
    assert f"TrainJob {JOB}: Complete (done)" in out.err
    assert cluster.polls == 5  # it stopped at the first poll that saw Complete
    assert all(q["timestamps"].lower() == "true" and q["container"] == "node"
               for q in cluster.log_queries)
    # the first read is the whole log, later ones a window the overlap of which is dropped
    assert "sinceSeconds" not in cluster.log_queries[0]
    assert all(int(q["sinceSeconds"]) >= 1 for q in cluster.log_queries[1:])


def test_follow_continues_with_the_pod_that_replaces_the_node(cluster, capsys):
    old, new = f"{JOB}-node-0-0-fghij", f"{JOB}-node-0-0-zzzzz"

    def restart(c):  # JobSet recreates node 0: the old pod is still terminating
        c.write(old, "old pod's last line")
        c.pods.append(pod(new, 0, "2026-12-01T12:00:00Z"))
        c.write(new, "new pod starts")

    def old_gone(c):
        c.replace(old, pod(new, 0, "2026-12-01T12:00:00Z"))
        c.write(new, "new pod resumes from the checkpoint")

    def finish(c):
        c.jobs[("ml", JOB)]["status"] = COMPLETE

    cluster.script = [lambda c: None, restart, old_gone, finish]
    assert logs(cluster, f"trainjob/{JOB}", "-f") == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"log of {old}", "old pod's last line", "new pod starts",
                                    "new pod resumes from the checkpoint"]
    assert f"pod {old} was replaced by {new}" in out.err


def test_follow_waits_for_the_first_pod(cluster, capsys):
    first = pod(f"{JOB}-node-0-1-late0", 1, "2026-12-01T12:00:00Z")
    cluster.pods = [p for p in cluster.pods if p["metadata"]["name"] != f"{JOB}-node-0-1-klmno"]

    def start(c):
        c.pods.append(first)
        c.write(first["metadata"]["name"], "rank 1 up")
        c.jobs[("ml", JOB)]["status"] = COMPLETE

    cluster.script = [lambda c: None, start]
    assert logs(cluster, f"trainjob/{JOB}", "--follow", "--node", "1") == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["rank 1 up"]
    assert "waiting for the pod of node 1" in out.err


def test_follow_errors_are_one_line(cluster, capsys):
    assert logs(cluster, "trainjob/nope", "--follow") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainjob/nope: no TrainJob of that name" in err
    assert logs(cluster, f"trainjob/{JOB}", "--follow", "--node", "2") == 1
    assert "--node 2 is not a node rank of this TrainJob" in capsys.readouterr().err
    cluster.forbidden.add("pods")
    assert logs(cluster, f"trainjob/{JOB}", "--follow") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered 403 Forbidden" in err and "Traceback" not in err
    cluster.forbidden.clear()

    def deleted(c):
        del c.jobs[("ml", JOB)]

    cluster.script = [lambda c: None, deleted]
    assert logs(cluster, f"trainjob/{JOB}", "--follow") == 1
    assert f"TrainJob {JOB} is gone (deleted)" in capsys.readouterr().err


# -- recipe files: what `mtgrpo render` committed names the resources ---------------------------

def committed(recipe: str, kind: str) -> dict:
    """The committed manifest of ``recipe``'s ``kind`` (written by `mtgrpo render`)."""
    [path] = (REPO / "manifests").glob(f"*/{recipe}-*-{kind.lower()}.yaml")
    return yaml.safe_load(path.read_text())


KF_RECIPE = REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml"
TUNE_RECIPE = REPO / "recipes" / "qwen2-5-1-5b-kubeflow-tune.yaml"


def test_recipe_file_status_wait_and_logs_find_its_train_job(cluster, capsys):
    meta = committed("qwen3-1-7b-kubeflow", "TrainJob")["metadata"]
    name, ns = meta["name"], meta["namespace"]
    args = ["--kubeconfig", cluster.kubeconfig]
    assert main(["status", str(KF_RECIPE), *args]) == 0
    assert capsys.readouterr().out.strip() == (
        f"TrainJob {name}: NotApplied (what {KF_RECIPE} renders to now; not in namespace {ns})")
    assert main(["wait", str(KF_RECIPE), *args]) == 1
    assert f"TrainJob: {name} is not in namespace {ns}" in capsys.readouterr().err

    cluster.jobs[(ns, name)] = train_job(name, ns)
    cluster.jobs[(ns, name)]["status"] = {"jobsStatus": [{"active": 2, "ready": 1}]}
    cluster.pods.append(pod(f"{name}-node-0-0-aaaaa", 0, "2026-12-01T10:00:00Z", name, ns))
    cluster.write(f"{name}-node-0-0-aaaaa", "training on rank 0")
    assert main(["status", str(KF_RECIPE), *args]) == 0
    assert capsys.readouterr().out.strip() == \
        f"TrainJob {name}: Running (2 pods active, 1 ready); 2 nodes"
    assert main(["logs", str(KF_RECIPE), *args]) == 0
    assert capsys.readouterr().out == "training on rank 0\n"
    cluster.jobs[(ns, name)]["status"] = COMPLETE
    assert main(["wait", str(KF_RECIPE), *args]) == 0
    assert capsys.readouterr().out.strip() == f"TrainJob {name} completed"


def test_tuning_recipe_file_reads_its_experiment(cluster, capsys):
    meta = committed("qwen2-5-1-5b-kf-tune", "Experiment")["metadata"]
    name, ns = meta["name"], meta["namespace"]
    args = ["--kubeconfig", cluster.kubeconfig]
    assert main(["logs", str(TUNE_RECIPE), *args]) == 1
    assert f"experiment/{name}: no Katib Experiment of that name" in capsys.readouterr().err
    trial = f"{name}-abcd1234"
    cluster.experiments[(ns, name)] = {"status": {
        "conditions": [{"type": "Created", "status": "True"},
                       {"type": "Running", "status": "True", "reason": "ExperimentRunning"}],
        "trials": 3, "trialsSucceeded": 2, "trialsRunning": 1,
        "currentOptimalTrial": {"bestTrialName": trial, "observation": {
            "metrics": [{"name": "eval_reward", "latest": "0.5"}]}}}}
    assert main(["status", str(TUNE_RECIPE), *args]) == 0
    assert capsys.readouterr().out.strip() == (
        f"Experiment {name}: Running (ExperimentRunning); trials: 3 (2 succeeded, 1 running); "
        f"best {trial} eval_reward=0.5")
    cluster.jobs[(ns, trial)] = train_job(trial, ns, nodes=1)
    cluster.pods.append(pod(f"{trial}-node-0-0-bbbbb", 0, "2026-12-01T10:00:00Z", trial, ns))
    cluster.write(f"{trial}-node-0-0-bbbbb", "eval_reward=0.5")
    assert main(["logs", str(TUNE_RECIPE), *args]) == 0  # the best trial's TrainJob
    assert capsys.readouterr().out == "eval_reward=0.5\n"
    assert main(["logs", str(TUNE_RECIPE), "--trial", f"{name}-other000", *args]) == 1
    assert f"trainjob/{name}-other000: no pod of node 0" in capsys.readouterr().err
    cluster.experiments[(ns, name)]["status"]["conditions"].append(
        {"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached"})
    assert main(["wait", str(TUNE_RECIPE), *args]) == 0
    assert capsys.readouterr().out.strip() == f"Experiment {name} completed"


def test_follow_rides_out_an_unavailable_api_server_and_stops_on_ctrl_c(cluster, capsys,
                                                                         monkeypatch):
    import mtgrpo.kubeflow.follow as follow

    newest = f"{JOB}-node-0-0-fghij"

    def outage(c):  # the API server restarts: the next two polls get 503
        c.fail_next.extend([503, 503])
        c.write(newest, "after the outage")

    def finish(c):
        c.jobs[("ml", JOB)]["status"] = COMPLETE

    cluster.script = [lambda c: None, outage, finish]
    assert logs(cluster, f"trainjob/{JOB}", "--follow") == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"log of {newest}", "after the outage"]
    assert out.err.count("failed (503 Service Unavailable); trying again") == 2

    pauses = []

    def interrupt(seconds):  # Ctrl-C while it waits for the next poll
        pauses.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(follow, "_pause", interrupt)
    cluster.jobs[("ml", JOB)]["status"] = {}  # running again
    assert logs(cluster, f"trainjob/{JOB}", "--follow") == 130
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"log of {newest}", "after the outage"]
    assert out.err.splitlines()[-1] == "interrupted" and "Traceback" not in out.err
    assert pauses == [0.01]


def test_cursor_drops_the_overlap_and_holds_back_an_unfinished_line():
    import calendar

    from mtgrpo.kubeflow.follow import PodCursor, stamp_key

    nine = calendar.timegm((2026, 12, 1, 9, 0, 0))
    assert stamp_key("2026-12-01T10:00:00+01:00 x") == ((nine, 0), "x")
    assert stamp_key("2026-12-01T09:00:00.5Z y") == ((nine, 500000000), "y")
    assert stamp_key("no stamp") == (None, "no stamp")
    cursor = PodCursor("p")
    assert cursor.new_lines("2026-12-01T09:00:00.1Z a\n2026-12-01T09:00:00.2Z b\n"
                            "2026-12-01T09:00:00.2Z c\n2026-12-01T09:00:00.3Z hal",
                            final=False) == ["a", "b", "c"]
    # the next window starts inside the first: .2 had two lines, a third is new
    assert cursor.new_lines("2026-12-01T09:00:00.2Z b\n2026-12-01T09:00:00.2Z c\n"
                            "2026-12-01T09:00:00.2Z d\n2026-12-01T09:00:00.3Z half done\n",
                            final=False) == ["d", "half done"]
    assert cursor.new_lines("2026-12-01T09:00:00.3Z half done\n2026-12-01T09:00:00.4Z end",
                            final=True) == ["end"]
