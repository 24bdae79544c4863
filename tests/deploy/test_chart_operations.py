"""The chart's operations side (issue 13 §2): autoscaling, `helm test`, startup and Celery liveness probes,
extra env and volumes, scheduling, and the backup CronJob. Rendered by the real helm; the Kubernetes
1.30 validation of every value set is test_chart.py's. The probes and the test Pod's command also run
here against the real processes they check (gunicorn, a Celery worker and beat on Redis).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from celery.beat import beat_nodename

from tests.deploy.chart import (
    COMPONENTS,
    FULLNAME,
    ROOT,
    container,
    cronjob,
    deployment,
    env_map,
    find,
    one,
    pod_specs,
    render,
    render_error,
    values,
)
from tests.e2e.servers import database_url, gunicorn, stop
from tests.e2e.test_run_prod import own_name, redis_url  # noqa: F401 (fixtures)

SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")


def pod_labels(docs: list[dict], component: str) -> dict:
    return deployment(docs, component)["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


# --- autoscaling ---


def test_no_autoscaler_by_default_and_the_deployments_keep_their_replicas():
    docs = render("minimal")
    assert not find(docs, "HorizontalPodAutoscaler")
    assert {c: deployment(docs, c)["spec"]["replicas"] for c in COMPONENTS} == {
        "api": 2,
        "ws": 2,
        "worker": 1,
        "beat": 1,
    }


@pytest.mark.parametrize("component", ["api", "ws"])
def test_autoscaler_owns_the_replicas_of_api_and_ws(component):
    docs = render("production")
    settings = values("production")[component]["autoscaling"]
    hpa = one(docs, "HorizontalPodAutoscaler", f"{FULLNAME}-{component}")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = deployment(docs, component)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": target["apiVersion"],
        "kind": "Deployment",
        "name": target["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == settings["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == settings["maxReplicas"]
    # Left out, or every `helm upgrade` would reset the count the autoscaler chose.
    assert "replicas" not in target["spec"]
    metrics = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    cpu = settings.get("targetCPUUtilizationPercentage", 70)  # ws: the chart's default
    assert metrics["cpu"] == {"type": "Utilization", "averageUtilization": cpu}
    memory = settings.get("targetMemoryUtilizationPercentage")
    assert metrics.get("memory") == (memory and {"type": "Utilization", "averageUtilization": memory})
    assert hpa["spec"].get("behavior") == (settings.get("behavior") or None)
    # Utilization is a share of the requests: the containers have them.
    assert container(docs, component)["resources"]["requests"]["cpu"]


def test_autoscaling_leaves_worker_and_beat_alone():
    docs = render("production")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in find(docs, "HorizontalPodAutoscaler")} == {
        f"{FULLNAME}-api",
        f"{FULLNAME}-ws",
    }
    assert deployment(docs, "worker")["spec"]["replicas"] == 3
    assert deployment(docs, "beat")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("api.autoscaling.targetCPUUtilizationPercentage=null",),
            "api.autoscaling needs a target",
        ),
        (
            ("ws.autoscaling.minReplicas=5", "ws.autoscaling.maxReplicas=3"),
            "ws.autoscaling.minReplicas (5) is larger than maxReplicas (3)",
        ),
        (("api.resources.requests.cpu=null",), "share of api.resources.requests.cpu"),
        (
            ("api.autoscaling.targetMemoryUtilizationPercentage=80", "api.resources.requests.memory=null"),
            "share of api.resources.requests.memory",
        ),
    ],
)
def test_autoscaling_that_cannot_work_stops_the_render(sets, message):
    component = sets[0].split(".", 1)[0]
    assert message in render_error("minimal", f"{component}.autoscaling.enabled=true", *sets)


# --- helm test ---


def test_helm_test_pod_asks_the_api_service_for_readiness():
    docs = render("minimal")
    (pod,) = find(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (cont,) = pod["spec"]["containers"]
    assert cont["image"] == container(docs, "api")["image"]  # no other image to pull or trust
    url = urlsplit(cont["command"][-1])
    assert url.path == "/health/ready"
    service = one(docs, "Service", f"{FULLNAME}-api")
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    # The api answers that Host: its name is among ALLOWED_HOSTS.
    assert url.hostname in env_map(container(docs, "api"))["ALLOWED_HOSTS"]["value"].split(",")
    assert not find(render("minimal", "tests.enabled=false"), "Pod")


@pytest.mark.django_db(transaction=True)
def test_helm_test_command_passes_on_a_ready_api_and_fails_without_one():
    """The test Pod's command, run against the api's real server (gunicorn, as the api pods run it)."""
    (pod,) = find(render("minimal"), "Pod")
    (cont,) = pod["spec"]["containers"]
    command, rendered_url = cont["command"][:-1], cont["command"][-1]
    assert command[0] == "python"
    command = [sys.executable, *command[1:]]
    with gunicorn(workers=1) as (base_url, _process):
        local_url = base_url + urlsplit(rendered_url).path
        passed = subprocess.run([*command, local_url], capture_output=True, text=True, timeout=30)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("200 ") and '"status": "ok"' in passed.stdout
    # The server is gone now: no answer fails the test.
    failed = subprocess.run([*command, local_url], capture_output=True, text=True, timeout=30)
    assert failed.returncode != 0 and "URLError" in failed.stderr


# --- probes of the Celery processes ---


def probe_script(cont: dict) -> str:
    command = cont["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    return command[2]


def test_worker_and_beat_have_liveness_probes_that_name_their_own_node():
    docs = render("minimal")
    queue = one(docs, "ConfigMap", FULLNAME)["data"]["CELERY_QUEUE"]
    worker = container(docs, "worker")
    # The worker's node name is --hostname with %h the pod's host name ($HOSTNAME in the container).
    hostname = worker["command"][worker["command"].index("--hostname") + 1]
    assert hostname == f"{queue}@%h"
    assert '--destination "$CELERY_QUEUE@$HOSTNAME"' in probe_script(worker)
    beat = container(docs, "beat")
    assert "--enable-remote-control" in beat["command"]
    assert "-n" not in beat["command"] and "--hostname" not in beat["command"]
    assert beat_nodename(None) == f"celerybeat@{socket.gethostname()}"  # Celery's default for beat
    assert '--destination "celerybeat@$HOSTNAME"' in probe_script(beat)
    for cont in (worker, beat):
        probe = cont["livenessProbe"]
        script = probe_script(cont)
        reply_timeout = float(script.split("--timeout ", 1)[1].split()[0])
        # kubelet ends the probe after timeoutSeconds: the process start and the wait for the reply fit.
        assert probe["timeoutSeconds"] >= reply_timeout + 10
        assert probe["periodSeconds"] >= 60 and probe["failureThreshold"] >= 3
        assert probe["initialDelaySeconds"] >= 30
    assert "livenessProbe" not in container(render("minimal", "beat.livenessProbe=null"), "beat")


def celery_command(command: list[str]) -> list[str]:
    assert command[0] == "celery"
    return [sys.executable, "-m", "celery", *command[1:]]


def run_probe(script: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["/bin/sh", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_celery_probes_pass_on_running_processes_and_fail_on_frozen_ones(redis_url, own_name, tmp_path):  # noqa: F811
    """The chart's worker and beat commands and their probe scripts, as the pods run them: the container's
    env (CELERY_QUEUE from the ConfigMap, HOSTNAME the pod's name), celery on the PATH."""
    docs = render("minimal", f"config.celeryQueue={own_name}")
    worker, beat = container(docs, "worker"), container(docs, "beat")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "CELERY_QUEUE": own_name,
        "CELERY_WORKER_CONCURRENCY": "1",
        "VAR_DIR": str(tmp_path),
        "HOSTNAME": socket.gethostname(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    processes = {}
    for name, cont in (("worker", worker), ("beat", beat)):
        with open(tmp_path / f"{name}.log", "wb") as log:
            processes[name] = subprocess.Popen(
                celery_command(cont["command"]),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    scripts = {"worker": probe_script(worker), "beat": probe_script(beat)}
    try:
        # Up: each answers within the probe's reply timeout (a few tries while they start).
        for name, script in scripts.items():
            for _attempt in range(6):
                probe = run_probe(script, env)
                output = probe.communicate(timeout=60)[0]
                if probe.returncode == 0:
                    break
            assert probe.returncode == 0, (
                f"{name}: {output}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}"
            )
            assert "pong" in output and ("celerybeat@" if name == "beat" else f"{own_name}@") in output
        # Frozen (a hung process is what the probe is for): no answer, the probe fails.
        for process in processes.values():
            os.killpg(process.pid, signal.SIGSTOP)
        probes = {name: run_probe(script, env) for name, script in scripts.items()}
        for name, probe in probes.items():
            output = probe.communicate(timeout=60)[0]
            assert probe.returncode != 0, f"{name}: {output}"
            assert "No nodes replied" in output
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
            stop(process)


# --- extra env, envFrom and volumes ---


def mounted_file(spec: dict, cont: dict, path: str) -> dict:
    """The volume that holds `path` in this container."""
    for mount in cont["volumeMounts"]:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return next(v for v in spec["volumes"] if v["name"] == mount["name"])
    raise AssertionError(f"{path} is on no volume")


def test_the_postgresql_ca_bundle_reaches_every_process():
    """production-values: verify-full with the CA from a Secret, in DATABASE_URL and as PGSSLROOTCERT."""
    docs = render("production")
    v = values("production")
    ca_path = parse_qs(urlsplit(v["database"]["url"]).query)["sslrootcert"][0]
    specs = pod_specs(docs)
    assert {n.removeprefix(f"{FULLNAME}-") for n in specs} == {
        "api",
        "ws",
        "worker",
        "beat",
        "migrate",
        "backup",
    }
    for name, spec in specs.items():
        (cont,) = spec["containers"]
        assert mounted_file(spec, cont, ca_path) == {
            "name": "postgres-ca",
            "secret": {"secretName": "postgres-ca"},
        }
        assert env_map(cont)["PGSSLROOTCERT"]["value"] == ca_path, name
        assert all(m.get("readOnly") for m in cont["volumeMounts"] if m["name"] == "postgres-ca")


def test_a_components_extras_come_after_the_global_ones_and_stay_its_own():
    sets = (
        "extraEnv[0].name=LOG_LEVEL",
        "extraEnv[0].value=WARNING",
        "worker.extraEnv[0].name=LOG_LEVEL",
        "worker.extraEnv[0].value=DEBUG",
        "extraEnvFrom[0].secretRef.name=more-settings",
        "worker.extraEnvFrom[0].configMapRef.name=worker-settings",
        "beat.extraVolumes[0].name=scratch",
        "beat.extraVolumes[0].emptyDir.sizeLimit=1Mi",
        "beat.extraVolumeMounts[0].name=scratch",
        "beat.extraVolumeMounts[0].mountPath=/scratch",
    )
    docs = render("minimal", *sets)
    for component in COMPONENTS:
        cont = container(docs, component)
        levels = [e["value"] for e in cont["env"] if e["name"] == "LOG_LEVEL"]
        # The later entry of a name wins in Kubernetes: the component's own comes last.
        assert levels == (["WARNING", "DEBUG"] if component == "worker" else ["WARNING"]), component
        sources = cont["envFrom"]
        assert sources[0]["configMapRef"]["name"] == FULLNAME  # the chart's settings first
        assert sources[1] == {"secretRef": {"name": "more-settings"}}
        assert (sources[2:] == [{"configMapRef": {"name": "worker-settings"}}]) == (component == "worker")
        spec = deployment(docs, component)["spec"]["template"]["spec"]
        has_scratch = any(v["name"] == "scratch" for v in spec["volumes"])
        assert (
            has_scratch
            == (component == "beat")
            == any(m["mountPath"] == "/scratch" for m in cont["volumeMounts"])
        )
    (migrate,) = one(docs, "Job", f"{FULLNAME}-migrate")["spec"]["template"]["spec"]["containers"]
    assert [e["value"] for e in migrate["env"] if e["name"] == "LOG_LEVEL"] == ["WARNING"]


# --- scheduling ---


@pytest.mark.parametrize("component", ["api", "ws", "worker"])
def test_replicas_prefer_different_nodes_by_default(component):
    docs = render("minimal")
    anti = deployment(docs, component)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti  # soft: never blocks a rollout
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"], pod_labels(docs, component))
    # Only its own component: an api pod does not avoid a worker pod.
    others = [c for c in COMPONENTS if c != component]
    assert not any(selects(term["labelSelector"], pod_labels(docs, other)) for other in others)


def test_beat_and_the_jobs_have_no_anti_affinity():
    docs = render("production")
    assert "podAntiAffinity" not in deployment(docs, "beat")["spec"]["template"]["spec"].get("affinity", {})
    for name in (f"{FULLNAME}-migrate", f"{FULLNAME}-backup"):
        assert "affinity" not in pod_specs(docs)[name]


def test_anti_affinity_presets_and_an_affinity_of_ones_own():
    docs = render("production")
    ws = deployment(docs, "ws")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (required,) = ws["requiredDuringSchedulingIgnoredDuringExecution"]  # ws: hard
    assert required["topologyKey"] == "kubernetes.io/hostname"
    worker = deployment(docs, "worker")["spec"]["template"]["spec"]["affinity"]
    assert worker["nodeAffinity"] == values("production")["worker"]["affinity"]["nodeAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in worker["podAntiAffinity"]  # the preset added
    own = (
        "api.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=5",
        "api.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey=zone",
    )
    api = deployment(render("minimal", *own), "api")["spec"]["template"]["spec"]["affinity"]
    assert api["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 5
    off = deployment(render("minimal", "api.podAntiAffinityPreset="), "api")["spec"]["template"]["spec"]
    assert "affinity" not in off
    assert "must be one of" in render_error("minimal", "api.podAntiAffinityPreset=always")


def test_node_selectors_merge_tolerations_add_and_spread_constraints_select_their_component():
    docs = render("production")
    v = values("production")
    for name, spec in pod_specs(docs).items():
        component = name.removeprefix(f"{FULLNAME}-")
        own = v.get(component, {})
        assert spec["nodeSelector"] == {**v["nodeSelector"], **own.get("nodeSelector", {})}, name
        assert spec["tolerations"] == v["tolerations"] + own.get("tolerations", []), name
        (spread,) = spec["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert set(spread["labelSelector"]["matchLabels"]) == set(SELECTOR_KEYS)
    minimal = pod_specs(render("minimal"))
    assert not any(
        {"nodeSelector", "tolerations", "topologySpreadConstraints"} & set(s) for s in minimal.values()
    )


# --- gunicorn ---


def test_gunicorn_timeout_is_a_value():
    api = container(render("production"), "api")["command"]
    assert api[api.index("--timeout") + 1] == str(values("production")["api"]["timeout"])


# --- the backup CronJob ---


def test_no_backup_by_default():
    docs = render("minimal")
    assert not find(docs, "CronJob")
    assert not find(docs, "Secret", f"{FULLNAME}-backup")


def backup_container(docs: list[dict]) -> dict:
    (cont,) = cronjob(docs, "backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return cont


def test_backup_cronjob_runs_backup_fleet_on_the_schedule_with_keys_from_the_charts_secret():
    docs = render("production")
    v = values("production")["backup"]
    job = cronjob(docs, "backup")
    assert job["spec"]["schedule"] == "0 3 * * *"  # the default
    assert job["spec"]["timeZone"] == v["timeZone"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"  # never two archives being written at once
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # backup_fleet builds the archive in the temporary directory: more room than the other pods' /tmp.
    tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]["sizeLimit"]
    assert tmp == "2Gi" and deployment(docs, "api")["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] == {
        "sizeLimit": "64Mi"
    }
    cont = backup_container(docs)
    assert cont["command"] == ["/bin/sh", "-ec", 'exec python manage.py backup_fleet --to "$BACKUP_URL"']
    env = env_map(cont)
    assert env["BACKUP_URL"]["value"] == v["url"]
    assert env["BACKUP_RETENTION"]["value"] == str(v["retention"])
    assert env["AWS_S3_ENDPOINT_URL"]["value"] == v["s3"]["endpointUrl"]
    assert env["AWS_S3_REGION_NAME"]["value"] == v["s3"]["region"]
    secret = one(docs, "Secret", f"{FULLNAME}-backup")
    for name, key in (("AWS_ACCESS_KEY_ID", "accessKeyId"), ("AWS_SECRET_ACCESS_KEY", "secretAccessKey")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert base64.b64decode(secret["data"][ref["key"]]).decode() == v["s3"][key]
    # The same database, keys and settings as the other processes.
    assert env["DATABASE_URL"] == env_map(container(docs, "api"))["DATABASE_URL"]
    assert cont["envFrom"][0] == {"configMapRef": {"name": FULLNAME}}


def test_backup_keys_and_endpoint_from_an_existing_secret():
    docs = render("existing-secret")
    s3 = values("existing-secret")["backup"]["s3"]
    env = env_map(backup_container(docs))
    for name, key in (
        ("AWS_ACCESS_KEY_ID", "accessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "secretAccessKey"),
        ("AWS_S3_ENDPOINT_URL", "endpointUrl"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": s3["existingSecret"],
            "key": s3["existingSecretKeys"][key],
        }
    assert env["BACKUP_RETENTION"]["value"] == "7"  # the default, as the settings' own
    assert not find(docs, "Secret")


def test_backup_without_keys_leaves_the_credentials_to_boto3():
    """No keys and no Secret: boto3's own chain (e.g. an IAM role through the ServiceAccount)."""
    docs = render(
        "minimal", "backup.enabled=true", "backup.url=s3://bucket/manager", "backup.schedule=15 2 * * 0"
    )
    assert cronjob(docs, "backup")["spec"]["schedule"] == "15 2 * * 0"
    env = env_map(backup_container(docs))
    assert not {name for name in env if name.startswith("AWS_")}
    assert not find(docs, "Secret", f"{FULLNAME}-backup")
    assert "timeZone" not in cronjob(docs, "backup")["spec"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("backup.enabled=true",), "backup.url is required"),
        (
            ("backup.enabled=true", "backup.url=s3://b/p", "backup.s3.accessKeyId=AKIA"),
            "backup.s3.accessKeyId and backup.s3.secretAccessKey go together",
        ),
        (("backup.enabled=true", "backup.url=ftp://b/p"), "backup.url"),
        (("backup.enabled=true", "backup.url=s3://b/p", "backup.retention=-1"), "backup.retention"),
    ],
)
def test_a_backup_that_cannot_run_stops_the_render(sets, message):
    assert message in render_error("minimal", *sets)
