"""`dynosim export kubernetes`: a folder of manifests (`kubectl apply -f k8s/`) of the app's current release.

Files are numbered in the order they are to be applied (kubectl applies a folder's files in name order, but
waits for nothing): `00-config.yaml` (a ConfigMap of the plain config vars, a Secret of the secret ones and
the add-ons' vars), `10-addon-<name>.yaml` (each add-on: its Secret, a headless Service by its name, a
StatefulSet with a PersistentVolumeClaim; none with --external-addons: every pod then needs the Secret
`<app>-addons` of their vars, which the user creates), `20-release.yaml` (the release phase: a Job, run
once, never retried, named after the release as Jobs cannot change), `30-<type>.yaml` (a Deployment per
process type with the formation's replicas, Heroku's 30 s stop, the dyno size's quota requested and its
hard limit enforced, DYNO_TYPE and the pod's name as DYNO_REPLICA for the image's entrypoint (a Deployment
numbers no replica: DYNO is web.<pod name>), and for web a readiness probe on $PORT, Heroku's boot check, and a Service),
`40-scheduler-<id>.yaml` (a CronJob per Scheduler job, in UTC). Every object is labelled with the app and
its release.

Kubernetes names are DNS labels: the app's name and each process type are mapped to one (lowercase, `_`
and anything else outside [a-z0-9-] a '-'), and one that cannot be (too long, two types mapped to one
name, a Service name that would not start with a letter) is refused in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dynosim.export import files
from dynosim.export.model import (
    ROUTER_PORT,
    STOP_GRACE_SECONDS,
    AddonModel,
    AppModel,
    ExportError,
    JobModel,
    ProcessModel,
)
from dynosim.formation import SIZES

FORMAT = "kubernetes"
DEFAULT_PATH = "k8s"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
NAME_MAX = 63
CRONJOB_MAX = 52  # a CronJob's name gets 11 characters more in its Jobs'
APP_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
RELEASE_LABEL = "dynosim/release"


def dns_label(text: str) -> str:
    """`text` as a DNS label: lowercase, every other character a '-', no '-' at either end."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def write(model: AppModel, path: Path) -> list[Path]:
    names = _Names(model)
    files.clear_folder(path, FORMAT)
    documents: list[tuple[str, list[dict[str, Any]], bool]] = [("00-config.yaml", _config(model, names), True)]
    for addon in model.addons:
        if not addon.external:
            documents.append((f"10-addon-{addon.name}.yaml", _addon(model, names, addon), True))
    if model.release_argv is not None:
        documents.append(("20-release.yaml", [_release_job(model, names, model.release_argv)], False))
    for process in model.processes:
        documents.append((f"30-{names.process(process.name)}.yaml", _process(model, names, process), False))
    for job in model.jobs:
        documents.append((f"40-scheduler-{dns_label(job.id)}.yaml", [_cronjob(model, names, job)], False))
    notes = [f"Apply it with `kubectl apply -f {path.name}/`."]
    if model.release_argv is not None:
        first = " ".join(f"-f {path.name}/{name}" for name, objects, _ in documents if objects and name < "20")
        notes = [
            "Apply the files in order, the release Job complete before the process types start:",
            *([f"  kubectl apply {first}"] if first else []),
            f"  kubectl apply -f {path.name}/20-release.yaml && kubectl wait --for=condition=complete "
            f"job/{names.release_job} --timeout=10m",
            f"  kubectl apply -f {path.name}/",
        ]
    if model.required_vars:
        notes.append(
            f"Create the Secret {names.external_secret} first (the add-ons run elsewhere): kubectl create secret "
            f"generic {names.external_secret} " + " ".join(f"--from-literal={name}=..." for name in model.required_vars)
        )
    written: list[Path] = []
    for name, objects, private in documents:
        if not objects:
            continue
        text = files.header(model, FORMAT, *([] if written else notes)) + files.to_yaml(*objects)
        written.append(files.write(path / name, text, private=private))
    return written


class _Names:
    """Every object's name, checked as Kubernetes checks it, before anything is written."""

    def __init__(self, model: AppModel) -> None:
        self.app = dns_label(model.app.replace(".", "-"))
        if not self.app:
            raise ExportError(f'the app\'s name "{model.app}" has no letter or digit to name Kubernetes objects by')
        self.release = model.release_label
        types: dict[str, str] = {}
        for process in model.processes:
            mapped = dns_label(process.name)
            if not mapped:
                raise ExportError(f'process type "{process.name}" has no letter or digit to name a Deployment by')
            if mapped in types:
                raise ExportError(
                    f'process types "{types[mapped]}" and "{process.name}" both become "{mapped}" in Kubernetes, '
                    "which allows lowercase letters, digits and - only; rename one in the Procfile"
                )
            types[mapped] = process.name
            self._check(self.deployment(process.name), NAME_MAX, f'process type "{process.name}"')
        if any(p.web for p in model.processes):
            self._check(self.deployment("web"), NAME_MAX, "the web Service")
            if not self.deployment("web")[0].isalpha():
                raise ExportError(
                    f'the web Service would be named "{self.deployment("web")}", and Kubernetes wants a Service name '
                    'to start with a letter; give the app a name that does (app.json "name")'
                )
        self.release_job = f"{self.app}-release-{self.release}"
        self._check(self.release_job, NAME_MAX, "the release phase's Job")
        self.config = f"{self.app}-config"
        self.secrets = f"{self.app}-secrets"
        self.external_secret = f"{self.app}-addons"
        for job in model.jobs:
            self._check(self.cronjob(job.id), CRONJOB_MAX, f"Scheduler job {job.id}")

    def process(self, name: str) -> str:
        return dns_label(name)

    def deployment(self, process_type: str) -> str:
        return f"{self.app}-{self.process(process_type)}"

    def cronjob(self, job_id: str) -> str:
        return f"{self.app}-scheduler-{dns_label(job_id)}"

    def _check(self, name: str, limit: int, what: str) -> None:
        if len(name) > limit or not _LABEL.fullmatch(name):
            raise ExportError(
                f'{what}: its Kubernetes name "{name}" is longer than {limit} characters; give the app a shorter '
                'name (app.json "name") or the type a shorter one'
            )

    def labels(self, component: str) -> dict[str, str]:
        return {APP_LABEL: self.app, COMPONENT_LABEL: component, RELEASE_LABEL: self.release}

    def selector(self, component: str) -> dict[str, str]:
        return {APP_LABEL: self.app, COMPONENT_LABEL: component}  # not the release: a selector cannot change


def _meta(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "labels": labels}


def _config(model: AppModel, names: _Names) -> list[dict[str, Any]]:
    environment = model.environment
    plain = {k: v for k, v in environment.items() if k not in model.secrets}
    secret = {k: v for k, v in environment.items() if k in model.secrets}
    objects: list[dict[str, Any]] = []
    if plain:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(names.config, names.labels("config")),
                "data": plain,
            }
        )
    if secret:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(names.secrets, names.labels("config")),
                "type": "Opaque",
                "stringData": secret,
            }
        )
    return objects


def _env_from(model: AppModel, names: _Names) -> list[dict[str, Any]]:
    environment = model.environment
    sources: list[dict[str, Any]] = []
    if any(k not in model.secrets for k in environment):
        sources.append({"configMapRef": {"name": names.config}})
    if any(k in model.secrets for k in environment):
        sources.append({"secretRef": {"name": names.secrets}})
    if model.required_vars:
        sources.append({"secretRef": {"name": names.external_secret}})
    return sources


def _container(
    model: AppModel, names: _Names, process_type: str, argv: tuple[str, ...], size: str, memory_mb: int, limit_mb: int
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": dns_label(process_type),
        "image": model.image,
        "imagePullPolicy": "IfNotPresent",  # an image `dynosim image` built is on the node, in no registry
        "args": list(argv),  # the image's entrypoint stays: Heroku's environment, then .profile.d
        "env": [
            {"name": "DYNO_TYPE", "value": process_type},
            {"name": "DYNO_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PORT", "value": str(ROUTER_PORT)},
            *({"name": name, "value": value} for name, value in model.size_env(size).items()),
        ],
    }
    if env_from := _env_from(model, names):
        container["envFrom"] = env_from
    container["resources"] = {"requests": {"memory": f"{memory_mb}Mi"}, "limits": {"memory": f"{limit_mb}Mi"}}
    return container


def _process(model: AppModel, names: _Names, process: ProcessModel) -> list[dict[str, Any]]:
    component = names.process(process.name)
    container = _container(
        model, names, process.name, process.argv, process.size, process.memory_mb, process.memory_limit_mb
    )
    if process.web:
        container["ports"] = [{"name": "http", "containerPort": ROUTER_PORT}]
        container["readinessProbe"] = {"tcpSocket": {"port": ROUTER_PORT}, "periodSeconds": 2, "failureThreshold": 3}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(names.deployment(process.name), names.labels(component)),
        "spec": {
            "replicas": process.quantity,
            "selector": {"matchLabels": names.selector(component)},
            "template": {
                "metadata": {"labels": names.labels(component)},
                "spec": {"terminationGracePeriodSeconds": STOP_GRACE_SECONDS, "containers": [container]},
            },
        },
    }
    if not process.web:
        return [deployment]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(names.deployment(process.name), names.labels(component)),
        "spec": {
            "selector": names.selector(component),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def _release_job(model: AppModel, names: _Names, argv: tuple[str, ...]) -> dict[str, Any]:
    size = SIZES[model.release_size]
    memory, limit = size.memory_mb, int(size.memory_mb * size.kill_factor)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(names.release_job, names.labels("release")),
        "spec": {
            "backoffLimit": 0,  # Heroku runs the release command once; a failure fails the release
            "template": {
                "metadata": {"labels": names.labels("release")},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
                    "containers": [_container(model, names, "release", argv, size.name, memory, limit)],
                },
            },
        },
    }


_POLICIES = {"allow": "Allow", "forbid": "Forbid", "replace": "Replace"}


def _cronjob(model: AppModel, names: _Names, job: JobModel) -> dict[str, Any]:
    container = _container(model, names, "scheduler", job.argv, job.size, job.memory_mb, job.memory_limit_mb)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(names.cronjob(job.id), names.labels("scheduler")),
        "spec": {
            "schedule": job.schedule,
            "timeZone": "Etc/UTC",  # Heroku Scheduler's and app.json cron's times are UTC
            "concurrencyPolicy": _POLICIES[job.concurrency_policy],
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": names.labels("scheduler")},
                        "spec": {
                            "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
                            "containers": [container],
                        },
                    },
                }
            },
        },
    }


def _addon(model: AppModel, names: _Names, addon: AddonModel) -> list[dict[str, Any]]:
    component = f"addon-{addon.service}"
    labels = {**names.labels(component), "dynosim/addon": addon.name}
    selector = {APP_LABEL: names.app, "dynosim/addon": addon.name}
    container: dict[str, Any] = {"name": addon.service, "image": addon.image}
    if addon.command is not None:
        container["args"] = list(addon.command)  # the image's entrypoint stays, as the docker backend has it
    container |= {
        "envFrom": [{"secretRef": {"name": addon.name}}],
        "ports": [{"name": addon.service, "containerPort": addon.container_port}],
        "readinessProbe": {"exec": {"command": list(addon.healthcheck)}, "periodSeconds": 2, "failureThreshold": 3},
        # a subfolder: a fresh volume's root may hold lost+found, which initdb refuses
        "volumeMounts": [{"name": "data", "mountPath": addon.volume_path, "subPath": "data"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(addon.name, labels),
            "type": "Opaque",
            "stringData": dict(addon.environment),
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(addon.name, labels),
            "spec": {
                "clusterIP": "None",  # its pod's own address, by the add-on's name, as the app's vars say
                "selector": selector,
                "ports": [{"name": addon.service, "port": addon.container_port, "targetPort": addon.container_port}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(addon.name, labels),
            "spec": {
                "serviceName": addon.name,
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": STOP_GRACE_SECONDS, "containers": [container]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data", "labels": labels},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{addon.storage_mb}Mi"}},
                        },
                    }
                ],
            },
        },
    ]
