"""`mtgrpo wait` and create-and-wait against the local fake Kubernetes API server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakekube import fake, terminal_condition, training_job, tuning_job, best_trial  # noqa: F401
from mtgrpo.cli import main
from mtgrpo.errors import UserError

RUNNING = {"trainingJobStatus": "InProgress", "secondaryStatus": "Starting"}


def later(fn, *args):
    """Run ``fn`` in a thread (the test plays the controller while the command waits)."""
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def wait(fake, *args):
    return main(["wait", *args, "--kubeconfig", str(fake.kubeconfig), "--timeout", "30"])


def test_completed_exits_0_with_progress_lines(fake, capsys):
    fake.put(training_job("Demo-A", status=RUNNING))

    def controller():
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-a", {"secondaryStatus": "Training"})
        fake.set_status("TrainingJob", "demo-a", {"trainingJobStatus": "Completed",
                                                  "secondaryStatus": "Completed"})
    later(controller)
    assert wait(fake, "Demo-A") == 0
    out, err = capsys.readouterr()
    assert out.strip() == "demo-a: Completed"
    progress = [line.split(" [")[0] for line in err.splitlines()]
    assert progress == ["demo-a: InProgress / Starting", "demo-a: InProgress / Training",
                        "demo-a: Completed / Completed"]


def test_failed_exits_1_with_the_reason(fake, capsys):
    fake.put(training_job("demo-b", status=RUNNING))

    def controller():
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-b", {
            "trainingJobStatus": "Failed", "secondaryStatus": "Failed",
            "failureReason": "AlgorithmError: CUDA out of memory"})
    later(controller)
    assert wait(fake, "trainingjob/demo-b") == 1
    assert capsys.readouterr().out.strip() == \
        "demo-b: Failed: AlgorithmError: CUDA out of memory"


def test_stopped_exits_1(fake, capsys):
    fake.put(training_job("demo-s", status={"trainingJobStatus": "Stopped",
                                            "failureReason": "stopped by user"}))
    assert wait(fake, "demo-s") == 1
    assert "Stopped: stopped by user" in capsys.readouterr().out


def test_terminal_condition_exits_2_with_its_message(fake, capsys):
    fake.put(training_job("demo-c", status=RUNNING))

    def controller():
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-c", {"conditions": terminal_condition(
            "ValidationException: 1 validation error detected: Value 'x' at 'trainingJobName'")})
    later(controller)
    assert wait(fake, "demo-c") == 2
    out = capsys.readouterr().out
    assert out.startswith("demo-c: Terminal: ValidationException: 1 validation error")


def test_tuning_job_completed(fake, capsys):
    fake.put(tuning_job("tune-a", status={"hyperParameterTuningJobStatus": "InProgress"}))

    def controller():
        fake.wait_watching()
        status = {"hyperParameterTuningJobStatus": "Completed",
                  **best_trial("tune-a-003-abc", {"learning_rate": "3e-06"}, 0.61)}
        fake.set_status("HyperParameterTuningJob", "tune-a", status)
    later(controller)
    assert wait(fake, "tune-a") == 0
    assert "best tune-a-003-abc eval_reward=0.61" in capsys.readouterr().err


def test_dropped_watch_is_resumed_from_the_last_version(fake, capsys):
    fake.put(training_job("demo-d", status=RUNNING))

    def controller():
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-d", {"secondaryStatus": "Training"})
        time.sleep(0.3)
        fake.drop_watches()  # mid-stream: no terminating chunk
        # Changed while no watch is open: the resumed watch must deliver it.
        fake.set_status("TrainingJob", "demo-d", {"secondaryStatus": "Uploading"})
        time.sleep(0.3)
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-d", {"trainingJobStatus": "Completed",
                                                  "secondaryStatus": "Completed"})
    later(controller)
    assert wait(fake, "demo-d") == 0
    err = capsys.readouterr().err
    assert "watch connection lost" in err
    assert "demo-d: InProgress / Uploading" in err
    assert fake.count("watch", "trainingjobs") >= 2
    assert fake.count("list", "trainingjobs") == 1  # resumed, not relisted


def test_410_gone_relists(fake, capsys):
    fake.put(training_job("demo-e", status=RUNNING))

    def controller():
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-e", {"secondaryStatus": "Training"})
        time.sleep(0.2)
        fake.drop_watches()
        fake.set_status("TrainingJob", "demo-e", {"secondaryStatus": "Uploading"})
        fake.compact()  # the version the client resumes from is gone now
        time.sleep(0.5)
        fake.wait_watching()
        fake.set_status("TrainingJob", "demo-e", {"trainingJobStatus": "Completed"})
    later(controller)
    assert wait(fake, "demo-e") == 0
    err = capsys.readouterr().err
    assert "410 Gone" in err
    assert fake.count("list", "trainingjobs") == 2  # the first list and the relist
    assert "demo-e: InProgress / Uploading" in err  # seen through the relist


def test_timeout_exits_124(fake, capsys):
    fake.put(training_job("demo-f", status=RUNNING))
    code = main(["wait", "demo-f", "--kubeconfig", str(fake.kubeconfig), "--timeout", "1"])
    assert code == 124
    assert "still InProgress after the 0m01s timeout" in capsys.readouterr().out


def test_deleted_while_waiting_exits_1(fake, capsys):
    fake.put(training_job("demo-g", status=RUNNING))

    def controller():
        fake.wait_watching()
        kube_delete(fake, "trainingjobs", "demo-g")
    later(controller)
    assert wait(fake, "demo-g") == 1
    assert "was deleted" in capsys.readouterr().out


def kube_delete(fake, plural, name):
    import urllib.request
    url = f"{fake.url}/apis/sagemaker.services.k8s.aws/v1alpha1/namespaces/ml/{plural}/{name}"
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE")).read()


# -- one-line errors, never a traceback -----------------------------------------------------

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_job(fake, capsys):
    fake.put(training_job("demo-known"))
    assert wait(fake, "demo-knwn") == 1
    line = one_error_line(capsys)
    assert "demo-knwn" in line and "did you mean 'demo-known'" in line


def test_no_kubeconfig(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["wait", "demo"]) == 1
    assert "no Kubernetes configuration found" in one_error_line(capsys)


def test_missing_kubeconfig_file(tmp_path, capsys):
    assert main(["status", "--kubeconfig", str(tmp_path / "nope.yaml")]) == 1
    assert "--kubeconfig: no such file" in one_error_line(capsys)


def test_unreachable_api_server(tmp_path, capsys):
    from fakekube import FakeKube
    dead = FakeKube()  # never started: nothing listens on its port
    kubeconfig = dead.write_kubeconfig(tmp_path / "kubeconfig")
    dead.server.server_close()
    # 69, not 1: CI tells "the job failed" from "the cluster could not be asked"
    assert main(["wait", "demo", "--kubeconfig", str(kubeconfig)]) == 69
    assert "cannot reach the Kubernetes API" in one_error_line(capsys)
    assert main(["status", "--kubeconfig", str(kubeconfig)]) == 69
    assert "cannot reach the Kubernetes API" in one_error_line(capsys)
    assert main(["wait", "trainjob/demo", "--kubeconfig", str(kubeconfig)]) == 69
    assert "cannot reach the Kubernetes API" in one_error_line(capsys)


def test_bad_timeout(fake, capsys):
    assert main(["wait", "x", "--timeout", "soon", "--kubeconfig", str(fake.kubeconfig)]) == 1
    assert "--timeout: 'soon' is not a duration" in one_error_line(capsys)


# -- create and wait (the pipeline components' step) ----------------------------------------

def test_create_and_wait_creates_then_waits(fake):
    from mtgrpo.operate import connect, create_and_wait

    def controller(server, obj):
        server.set_status("TrainingJob", obj["metadata"]["name"], {
            "trainingJobStatus": "Completed",
            "modelArtifacts": {"s3ModelArtifacts": "s3://b/out/x/output/model.tar.gz"}})
    fake.on_create["trainingjobs"] = controller
    kube = connect(kubeconfig=str(fake.kubeconfig))
    lines = []
    outcome = create_and_wait(kube, training_job("new-job"), timeout_s=30, progress=lines.append)
    assert outcome.code == 0
    assert outcome.job.model_artifact == "s3://b/out/x/output/model.tar.gz"
    assert lines[0] == "created TrainingJob new-job in namespace ml"
    # A retried step finds the resource (same name = same spec) and waits instead of failing.
    again = create_and_wait(kube, training_job("new-job"), timeout_s=30, progress=lines.append)
    assert again.code == 0 and "exists already" in lines[-2]
    assert fake.count("create", "trainingjobs") == 2 and fake.count("delete", "trainingjobs") == 0


def test_create_and_wait_deletes_the_job_on_timeout(fake):
    from mtgrpo.operate import connect, create_and_wait
    kube = connect(kubeconfig=str(fake.kubeconfig))
    outcome = create_and_wait(kube, training_job("slow-job"), timeout_s=1)
    assert outcome.code == 124
    assert ("trainingjobs", "ml", "slow-job") not in fake.objects


SIGTERM_SCRIPT = """
import sys
from mtgrpo.operate import connect, create_and_wait
sys.path.insert(0, {tests!r})
from fakekube import training_job
kube = connect(kubeconfig={kubeconfig!r})
try:
    create_and_wait(kube, training_job("cancel-me"), timeout_s=60, progress=print)
except BaseException as err:
    print("raised", type(err).__name__, flush=True)
    raise SystemExit(143)
"""


def test_sigterm_deletes_the_created_job(fake):
    """A cancelled pipeline run sends SIGTERM to the step's pod: the job must be stopped."""
    script = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent),
                                   kubeconfig=str(fake.kubeconfig))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        fake.wait_watching(timeout=30)
        assert ("trainingjobs", "ml", "cancel-me") in fake.objects
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert "deleted TrainingJob cancel-me so SageMaker stops the job" in out
    assert "raised Cancelled" in out
    assert ("trainingjobs", "ml", "cancel-me") not in fake.objects
    assert fake.count("delete", "trainingjobs") == 1


def test_heartbeat_while_nothing_changes(fake):
    from mtgrpo.operate import connect, wait_for
    fake.put(training_job("quiet", status=RUNNING))
    lines = []
    outcome = wait_for(connect(kubeconfig=str(fake.kubeconfig)), "TrainingJob", "quiet",
                       timeout_s=2.5, progress=lines.append, heartbeat_s=0.5, watch_s=1)
    assert outcome.code == 124
    assert lines[0].startswith("quiet: InProgress / Starting [")
    assert sum(line.endswith("(still waiting)") for line in lines[1:]) >= 1
    assert fake.count("watch", "trainingjobs") >= 2  # watched in slices, resumed each time
    assert fake.count("list", "trainingjobs") == 1


def test_in_cluster_configuration(monkeypatch, tmp_path):
    """In a pipeline step's pod: no kubeconfig, the service account's token and namespace."""
    from kubernetes.config import incluster_config

    from mtgrpo.operate import kube
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("team-a\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(kube, "IN_CLUSTER_NAMESPACE", tmp_path / "namespace")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = kube.connect()
    assert (client.server, client.namespace) == ("https://10.0.0.1:443", "team-a")
    assert kube.connect(namespace="other").namespace == "other"
    config = client.api.api_client.configuration
    assert config.api_key["authorization"].lower() == "bearer pod-token"


def test_namespace_defaults_to_the_projects(monkeypatch, tmp_path):
    """Run from a project, the commands look where `mtgrpo render` put the jobs."""
    import argparse

    from mtgrpo.operate import kube
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: from-context}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(config))
    parser = argparse.ArgumentParser()
    kube.add_connection_arguments(parser)
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert kube.connect_from_args(parser.parse_args([])).namespace == "from-context"
    (project / "recipes" / "_project.yaml").write_text("namespace: team-b\n")
    assert kube.connect_from_args(parser.parse_args([])).namespace == "team-b"
    assert kube.connect_from_args(parser.parse_args(["-n", "other"])).namespace == "other"
    (project / "recipes" / "_project.yaml").write_text("namespace: Team_B\n")
    with pytest.raises(UserError, match="namespace"):  # a broken project file is not skipped
        kube.connect_from_args(parser.parse_args([]))


def test_wait_for_a_recipe_waits_for_its_rendered_jobs(fake, capsys):
    """CI: `kubectl apply -k . && mtgrpo wait recipes/x.yaml` waits for what was just applied."""
    from mtgrpo.recipes import load_recipe
    from mtgrpo.render import build_resources, load_settings
    repo = Path(__file__).resolve().parent.parent
    recipe = repo / "recipes" / "qwen2-5-1-5b-tune.yaml"
    [current] = [r.body for r in build_resources(load_recipe(recipe), load_settings(repo))]
    name = current["metadata"]["name"]
    args = ["wait", str(recipe), "--kubeconfig", str(fake.kubeconfig), "-n", "mtgrpo",
            "--timeout", "30"]
    assert main(args) == 1  # not applied yet
    err = capsys.readouterr().err
    assert f"HyperParameterTuningJob: {name} is not in namespace mtgrpo" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    fake.put(current)

    def controller():
        fake.wait_watching()
        fake.set_status("HyperParameterTuningJob", name, {
            "hyperParameterTuningJobStatus": "Completed"}, namespace="mtgrpo")
    later(controller)
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"{name}: Completed"


def test_api_server_gone_backs_off_until_the_deadline(fake):
    from mtgrpo.operate import connect, wait_for
    fake.put(training_job("lonely", status=RUNNING))
    lines = []
    later(lambda: (fake.wait_watching(), fake.stop()))  # the API server goes away
    outcome = wait_for(connect(kubeconfig=str(fake.kubeconfig)), "TrainingJob", "lonely",
                       timeout_s=1.5, progress=lines.append, retry_s=0.05)
    assert outcome.code == 124
    delays = [line.rsplit(" in ", 1)[1] for line in lines if "watch connection lost" in line]
    assert delays[:3] == ["0.05s", "0.1s", "0.2s"], lines  # doubling, until the deadline
