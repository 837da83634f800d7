"""A local stand-in for the Kubernetes API server, serving the two ACK SageMaker custom resources.

No cluster can run on the test machines, so the operate commands are tested against this: a
real HTTP server (threads, HTTP/1.1, chunked watch streams) that implements the paths the
``kubernetes`` client calls for ``trainingjobs`` and ``hyperparametertuningjobs`` in group
``sagemaker.services.k8s.aws/v1alpha1``: create, get, list, watch and delete, with
``fieldSelector=metadata.name=...``, ``labelSelector=k=v``, ``resourceVersion`` and
``timeoutSeconds``. Tests play the controller: ``set_status`` changes a job's status (a MODIFIED
event), ``drop_watches`` cuts open watch connections mid-stream, ``compact`` forgets history so a
resumed watch gets 410 Gone, and ``on_create`` hooks react to resources the code under test
creates. ``requests`` records every (verb, plural) served, for the RBAC test.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from stand_in import JSONHandler

GROUP, VERSION = "sagemaker.services.k8s.aws", "v1alpha1"
KINDS = {"trainingjobs": "TrainingJob", "hyperparametertuningjobs": "HyperParameterTuningJob"}
PLURAL_OF = {kind: plural for plural, kind in KINDS.items()}
_PATH = re.compile(rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, str, dict]] = []  # rv, plural, ns, type, obj
        self.rv = 100
        self.oldest = 0  # watches from a resourceVersion below this get 410 Gone
        self.drops = 0  # bumped by drop_watches(); open streams compare and cut
        self.requests: list[tuple[str, str]] = []
        self.on_create: dict[str, Callable[["FakeKube", dict], None]] = {}
        self.cond = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.closed = False
        self._open_watches = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeKube":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "ml") -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester",
                                                      "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- playing the controller --------------------------------------------------------------
    def put(self, obj: dict, namespace: str = "ml") -> dict:
        """Add a resource as if applied with kubectl."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        with self.cond:
            key = (PLURAL_OF[obj["kind"]], meta["namespace"], meta["name"])
            return self._record(key, "ADDED", obj)

    def set_status(self, kind: str, name: str, status: dict, namespace: str = "ml") -> dict:
        """Merge ``status`` into the resource's status (a MODIFIED event)."""
        with self.cond:
            key = (PLURAL_OF[kind], namespace, name)
            obj = copy.deepcopy(self.objects[key])
            obj.setdefault("status", {}).update(copy.deepcopy(status))
            return self._record(key, "MODIFIED", obj)

    def drop_watches(self) -> None:
        """Cut every open watch connection (as a flaky network or an API server restart does)."""
        with self.cond:
            self.drops += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget event history (etcd compaction): a watch resumed from an old version gets 410."""
        with self.cond:
            self.oldest = self.rv + 1
            self.events.clear()

    def watching(self) -> int:
        """How many watch streams are open now."""
        with self.cond:
            return self._open_watches

    def wait_watching(self, timeout: float = 15.0) -> None:
        """Block until the code under test has a watch open (to script events after it)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self._open_watches == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no watch was opened")
                self.cond.wait(0.05)

    def count(self, verb: str, plural: str) -> int:
        return self.requests.count((verb, plural))

    def _record(self, key, kind_of_event: str, obj: dict) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if kind_of_event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append((self.rv, key[0], key[1], kind_of_event, copy.deepcopy(obj)))
        self.cond.notify_all()
        return copy.deepcopy(obj)


def _matches(obj: dict, name: str | None, labels: dict[str, str]) -> bool:
    meta = obj["metadata"]
    if name is not None and meta["name"] != name:
        return False
    return all(meta.get("labels", {}).get(k) == v for k, v in labels.items())


def _selectors(query: dict) -> tuple[str | None, dict[str, str]]:
    name = None
    for part in filter(None, query.get("fieldSelector", [""])[0].split(",")):
        field, _, value = part.partition("=")
        if field != "metadata.name":
            raise ValueError(f"field selector {field} is not supported")
        name = value
    labels = dict(p.split("=", 1) for p in filter(None, query.get("labelSelector", [""])[0].split(",")))
    return name, labels


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}


def _handler(fake: FakeKube):
    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def _route(self):
            url = urlparse(self.path)
            match = _PATH.match(url.path)
            if not match or match.group(2) not in KINDS:
                self.send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
                return None
            ns, plural, name = match.groups()
            query = parse_qs(url.query)
            try:
                _selectors(query)
            except ValueError as err:  # as the real server answers an unsupported selector
                self.send_json(400, _status(400, "BadRequest", str(err)))
                return None
            return ns, plural, name, query

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, plural, name, query = route
            if name:
                fake.requests.append(("get", plural))
                with fake.cond:
                    obj = fake.objects.get((plural, ns, name))
                if obj is None:
                    self.send_json(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
                else:
                    self.send_json(200, obj)
                return
            if query.get("watch", ["false"])[0].lower() in ("true", "1"):
                fake.requests.append(("watch", plural))
                self._watch(ns, plural, query)
                return
            fake.requests.append(("list", plural))
            field_name, labels = _selectors(query)
            with fake.cond:
                items = [copy.deepcopy(o) for (p, n, _), o in sorted(fake.objects.items())
                         if p == plural and n == ns and _matches(o, field_name, labels)]
                rv = str(fake.rv)
            for item in items:  # as the real API server does in lists
                item.pop("kind", None)
                item.pop("apiVersion", None)
            self.send_json(200, {"kind": KINDS[plural] + "List", "apiVersion": f"{GROUP}/{VERSION}",
                             "metadata": {"resourceVersion": rv}, "items": items})

        def _watch(self, ns: str, plural: str, query: dict) -> None:
            field_name, labels = _selectors(query)
            since = query.get("resourceVersion", [""])[0]
            timeout = float(query.get("timeoutSeconds", ["1800"])[0])
            deadline = time.monotonic() + timeout
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(event: dict) -> None:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            with fake.cond:
                drops = fake.drops
                if since and since != "0" and int(since) < fake.oldest - 1:
                    chunk({"type": "ERROR", "object": _status(
                        410, "Expired", f"too old resource version: {since} ({fake.oldest})")})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if since and since != "0":
                    cursor = int(since)
                    pending = []
                else:  # no version: the current state as ADDED events first
                    cursor = fake.rv
                    pending = [("ADDED", copy.deepcopy(o))
                               for (p, n, _), o in sorted(fake.objects.items())
                               if p == plural and n == ns and _matches(o, field_name, labels)]
                fake._open_watches += 1
                fake.cond.notify_all()
            try:
                while True:
                    for kind_of_event, obj in pending:
                        chunk({"type": kind_of_event, "object": obj})
                    with fake.cond:
                        pending = []
                        while not pending:
                            if fake.closed or fake.drops != drops:
                                # Cut mid-stream: no terminating chunk, the connection just ends.
                                self.close_connection = True
                                return
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                self.wfile.write(b"0\r\n\r\n")  # a clean end (server timeout)
                                return
                            pending = [(t, o) for rv, p, n, t, o in fake.events
                                       if rv > cursor and p == plural and n == ns
                                       and _matches(o, field_name, labels)]
                            cursor = max([cursor] + [e[0] for e in fake.events])
                            if not pending:
                                fake.cond.wait(min(remaining, 0.5))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                with fake.cond:
                    fake._open_watches -= 1

        def do_POST(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, plural, _, _ = route
            fake.requests.append(("create", plural))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            name = body.get("metadata", {}).get("name")
            if body.get("kind") != KINDS[plural] or not name:
                self.send_json(422, _status(422, "Invalid", "kind or metadata.name missing"))
                return
            body["metadata"]["namespace"] = ns
            body["metadata"].setdefault("uid", str(uuid.uuid4()))
            body["metadata"].setdefault("creationTimestamp", now_iso())
            with fake.cond:
                if (plural, ns, name) in fake.objects:
                    self.send_json(409, _status(409, "AlreadyExists",
                                            f'{plural} "{name}" already exists'))
                    return
                created = fake._record((plural, ns, name), "ADDED", body)
            self.send_json(201, created)
            hook = fake.on_create.get(plural)
            if hook:
                threading.Thread(target=hook, args=(fake, created), daemon=True).start()

        def do_DELETE(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, plural, name, _ = route
            fake.requests.append(("delete", plural))
            if self.headers.get("Content-Length"):
                self.rfile.read(int(self.headers["Content-Length"]))
            with fake.cond:
                obj = fake.objects.get((plural, ns, name))
                if obj is None:
                    self.send_json(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
                    return
                fake._record((plural, ns, name), "DELETED", copy.deepcopy(obj))
            self.send_json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    return Handler


# -- resources as `mtgrpo render` writes them (the parts the operate commands read) -------------

def training_job(name: str = "demo-sft-0a1b2c3d", *, recipe: str = "demo", status: dict | None = None,
                 instance_type: str = "ml.p4d.24xlarge", count: int = 2) -> dict:
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
        "metadata": {"name": name.lower(), "labels": {"mtgrpo.io/recipe": recipe},
                     "annotations": {"services.k8s.aws/region": "us-west-2"}},
        "spec": {
            "trainingJobName": name, "roleARN": "arn:aws:iam::111122223333:role/sm",
            "algorithmSpecification": {"trainingImage": "111122223333.dkr.ecr.us-west-2."
                                       "amazonaws.com/mtgrpo@sha256:" + "0" * 64,
                                       "trainingInputMode": "File"},
            "hyperParameters": {"learning_rate": "1e-06", "num_generations": "8"},
            "outputDataConfig": {"s3OutputPath": "s3://amzn-s3-demo-bucket/output"},
            "resourceConfig": {"instanceType": instance_type, "instanceCount": count,
                               "volumeSizeInGB": 200},
            "stoppingCondition": {"maxRuntimeInSeconds": 86400},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def tuning_job(name: str = "demo-tune-9f8e7d6c", *, recipe: str = "demo-tune",
               status: dict | None = None) -> dict:
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HyperParameterTuningJob",
        "metadata": {"name": name.lower(), "labels": {"mtgrpo.io/recipe": recipe},
                     "annotations": {"services.k8s.aws/region": "us-west-2"}},
        "spec": {
            "hyperParameterTuningJobName": name,
            "hyperParameterTuningJobConfig": {
                "strategy": "Bayesian",
                "hyperParameterTuningJobObjective": {"metricName": "eval_reward",
                                                     "type_": "Maximize"},
                "resourceLimits": {"maxNumberOfTrainingJobs": 10,
                                   "maxParallelTrainingJobs": 2}},
            "trainingJobDefinition": {
                "roleARN": "arn:aws:iam::111122223333:role/sm",
                "staticHyperParameters": {"num_generations": "8"},
                "outputDataConfig": {"s3OutputPath": "s3://amzn-s3-demo-bucket/tuning/"},
                "resourceConfig": {"instanceType": "ml.g5.2xlarge", "instanceCount": 1,
                                   "volumeSizeInGB": 100},
                "stoppingCondition": {"maxRuntimeInSeconds": 3600}},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def terminal_condition(message: str) -> list[dict]:
    return [{"type": "ACK.Terminal", "status": "True", "message": message,
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]


def best_trial(name: str, values: dict[str, str], value: float = 0.5,
               status: str = "Completed") -> dict:
    return {"bestTrainingJob": {
        "trainingJobName": name, "trainingJobStatus": status, "tunedHyperParameters": values,
        "finalHyperParameterTuningJobObjectiveMetric": {"metricName": "eval_reward",
                                                        "type_": "Maximize", "value": value}}}


@pytest.fixture
def fake(tmp_path_factory, monkeypatch):
    """A started FakeKube with ``fake.kubeconfig`` (namespace ``ml``); stopped after the test.

    The test runs in an empty directory: in a project (the repository root) the commands would
    default to the project's namespace instead of the context's.
    """
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    server = FakeKube().start()
    server.kubeconfig = server.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    try:
        yield server
    finally:
        server.stop()
