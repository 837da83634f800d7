"""Connecting to the cluster and reading/writing the two ACK SageMaker custom resources.

One small wrapper around the ``kubernetes`` client's ``CustomObjectsApi``: it picks the
configuration (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``, else the in-cluster service
account), the namespace (``--namespace``, else the project's in ``recipes/_project.yaml`` when
run from a project, which is where ``mtgrpo render`` put the jobs, else the kubeconfig
context's, else the pod's, else ``default``), and turns the API's failures into one-line
``UserError``s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mtgrpo.errors import Problem, Unreachable, UserError, did_you_mean

GROUP = "sagemaker.services.k8s.aws"
VERSION = "v1alpha1"
TRAINING = "TrainingJob"
TUNING = "HyperParameterTuningJob"
PLURALS = {TRAINING: "trainingjobs", TUNING: "hyperparametertuningjobs"}
KINDS = tuple(PLURALS)
# `kind/name` prefixes accepted on the command line, as kubectl spells them.
KIND_PREFIXES = {"trainingjob": TRAINING, "trainingjobs": TRAINING,
                 "hyperparametertuningjob": TUNING, "hyperparametertuningjobs": TUNING}
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Kube:
    """A connected client for one namespace."""

    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str
    server: str

    # -- reads --------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> dict:
        return self._call(kind, name, lambda: self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name))

    def exists(self, kind: str, name: str) -> bool:
        try:
            self.get(kind, name)
            return True
        except _NotFound:
            return False

    def find(self, name: str, kinds: tuple[str, ...] = KINDS) -> dict:
        """The resource called ``name`` (metadata name or SageMaker job name; ``kind/name`` too)."""
        kind, _, rest = name.partition("/")
        if rest and kind.lower() in KIND_PREFIXES:
            kinds, name = (KIND_PREFIXES[kind.lower()],), rest
        key = name.lower()  # metadata.name is the job name lower-cased
        for kind in kinds:
            try:
                return self.get(kind, key)
            except _NotFound:
                continue
        known = [item["metadata"]["name"] for kind in kinds for item in self.list(kind)]
        raise UserError(Problem(
            f"namespace {self.namespace}", name,
            f"no {' or '.join(kinds)} of that name{did_you_mean(key, known)}",
            ", ".join(sorted(known)) or "none exist"))

    def list(self, kind: str, label_selector: str = "") -> list[dict]:
        return self.list_with_version(kind, label_selector)[0]

    def list_with_version(self, kind: str, label_selector: str = "",
                          field_selector: str = "") -> tuple[list[dict], str]:
        """Items sorted by name, and the list's resourceVersion (where a watch starts)."""
        body = self._call(kind, "", lambda: self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], label_selector=label_selector,
            field_selector=field_selector))
        items = sorted(body.get("items", []), key=lambda i: i["metadata"]["name"])
        for item in items:  # list items carry no kind/apiVersion on some servers
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        return items, body.get("metadata", {}).get("resourceVersion", "")

    def watch(self, kind: str, name: str, resource_version: str,
              timeout_s: int) -> Iterator[dict]:
        """Watch events for one resource from ``resource_version`` until the server ends it.

        Raises ``WatchGone`` when that version is too old (HTTP 410): relist and start again.
        """
        import urllib3
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        stream = watch.Watch().stream(
            self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
            PLURALS[kind], field_selector=f"metadata.name={name}",
            resource_version=resource_version, timeout_seconds=max(1, int(timeout_s)),
            allow_watch_bookmarks=True, _request_timeout=timeout_s + 30)
        try:
            yield from stream
        except ApiException as err:
            if err.status == 410:
                raise WatchGone(str(err.reason)) from None
            raise self._user_error(err, kind, name) from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise WatchDropped(str(err)) from None

    # -- writes -------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        """Create ``body``; raises ``AlreadyExists`` when a resource of that name exists."""
        from kubernetes.client.rest import ApiException

        kind = body["kind"]
        try:
            return self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], body)
        except ApiException as err:
            if err.status == 409:
                raise AlreadyExists(body["metadata"]["name"]) from None
            raise self._user_error(err, kind, body["metadata"]["name"]) from None
        except Exception as err:  # connection refused, DNS, TLS
            raise self._unreachable(err) from None

    def delete(self, kind: str, name: str) -> bool:
        """Delete the resource (so the ACK controller stops the job); False if already gone."""
        try:
            self._call(kind, name, lambda: self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], name))
            return True
        except _NotFound:
            return False

    # -- errors -------------------------------------------------------------------------------
    def _call(self, kind: str, name: str, fn):
        from kubernetes.client.rest import ApiException

        try:
            return fn()
        except ApiException as err:
            if err.status == 404 and name:
                raise _NotFound(name) from None
            raise self._user_error(err, kind, name) from None
        except UserError:
            raise
        except Exception as err:  # urllib3 MaxRetryError, connection refused, TLS
            raise self._unreachable(err) from None

    def _user_error(self, err, kind: str, name: str) -> UserError:
        what = f"{PLURALS[kind]}/{name}" if name else PLURALS[kind]
        if err.status == 404:  # the list itself is missing: the CRD is not installed
            return UserError(Problem(self.server, PLURALS[kind],
                                     f"the API has no {GROUP}/{VERSION} {PLURALS[kind]}",
                                     "install the ACK SageMaker controller and its CRDs"))
        if err.status in (401, 403):
            return UserError(Problem(
                f"namespace {self.namespace}", what,
                f"not allowed ({err.status} {err.reason})",
                "a Role granting get/list/watch/create/delete on it; see `mtgrpo pipeline --rbac`"))
        return UserError(Problem(f"namespace {self.namespace}", what,
                                 f"Kubernetes API error {err.status} {err.reason}"))

    def _unreachable(self, err: Exception) -> UserError:
        reason = getattr(err, "reason", None) or err
        return Unreachable(Problem(self.server, "", f"cannot reach the Kubernetes API: {reason}"))


class _NotFound(Exception):
    pass


class AlreadyExists(Exception):
    """A resource of that name exists already (names are content hashes: it is the same job)."""


class WatchDropped(Exception):
    """The watch connection broke mid-stream: watch again from the last resourceVersion seen."""


class WatchGone(Exception):
    """The watch's resourceVersion is too old (HTTP 410 Gone): relist and watch again."""


def connect(kubeconfig: str | None = None, namespace: str | None = None,
            context: str | None = None) -> Kube:
    """A client for the configured cluster. Raises ``UserError`` when there is no configuration."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    paths = _kubeconfig_paths(kubeconfig)
    configuration = client.Configuration()
    context_namespace = None
    try:
        if paths:
            joined = os.pathsep.join(str(p) for p in paths)
            config.load_kube_config(config_file=joined, context=context,
                                    client_configuration=configuration)
            contexts, active = config.list_kube_config_contexts(joined)
            chosen = next((c for c in contexts if c["name"] == context), active)
            context_namespace = (chosen or {}).get("context", {}).get("namespace")
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            if IN_CLUSTER_NAMESPACE.is_file():
                context_namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        else:
            raise UserError(Problem(
                "kubeconfig", "", "no Kubernetes configuration found: no --kubeconfig, no "
                "$KUBECONFIG, no ~/.kube/config, and not running in a pod",
                "--kubeconfig FILE, $KUBECONFIG, ~/.kube/config or an in-cluster service account"))
    except ConfigException as err:
        where = os.pathsep.join(str(p) for p in paths) or "in-cluster config"
        raise UserError(Problem(where, context or "", f"unusable Kubernetes configuration: {err}"))
    # Fail fast on a dead endpoint instead of urllib3's default retries.
    configuration.retries = 1
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    return Kube(api=api, namespace=namespace or context_namespace or "default",
                server=configuration.host)


def _kubeconfig_paths(explicit: str | None) -> list[Path]:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(Problem(explicit, "--kubeconfig", "no such file"))
        return [path]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        paths = [Path(p) for p in env.split(os.pathsep) if p]
        found = [p for p in paths if p.is_file()]
        if not found:
            raise UserError(Problem(env, "KUBECONFIG", "none of these files exist"))
        return found
    default = Path(os.path.expanduser("~/.kube/config"))
    return [default] if default.is_file() else []


def add_connection_arguments(parser) -> None:
    """``--kubeconfig``, ``--context`` and ``-n/--namespace``, shared by the operate commands."""
    group = parser.add_argument_group("cluster")
    group.add_argument("--kubeconfig", metavar="FILE",
                       help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    group.add_argument("-n", "--namespace",
                       help="namespace of the jobs (default: recipes/_project.yaml's when run "
                            "from a project, else the context's, else 'default')")


def project_namespace(root: Path | str = ".") -> str | None:
    """The namespace the project under ``root`` renders its jobs into; None outside a project."""
    from mtgrpo.render.settings import SETTINGS_FILE, load_settings

    return load_settings(root).namespace if (Path(root) / SETTINGS_FILE).is_file() else None


def connect_from_args(args) -> Kube:
    return connect(kubeconfig=args.kubeconfig, namespace=args.namespace or project_namespace(),
                   context=args.context)
