"""The Helm chart (helm/promsnmp-manager), rendered by the real helm and checked against Kubernetes 1.30.

The invariants are the production shape's (docs/operations.md, "The processes"): gunicorn for REST,
daphne for /api/v1/ws, Celery workers, exactly one beat, a migrate job before every release; secrets
only in Secrets; every container non-root on a read-only root filesystem.
"""

from __future__ import annotations

import base64
import re
import tomllib

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from config.run_prod import child_commands
from tests.deploy.chart import (
    CHART,
    COMPONENTS,
    FULLNAME,
    NAMESPACE,
    ROOT,
    VALUE_SETS,
    container,
    deployment,
    env_map,
    find,
    helm,
    helm_test_pods,
    is_hook,
    one,
    pod_specs,
    render,
    render_error,
    values,
    values_file,
)

KUBERNETES_VERSION = "1.30"
SECRET_ENV = ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL")
# Env names the chart sets that are not settings: the Downward API's pod IP, used inside ALLOWED_HOSTS.
CHART_ONLY_ENV = {"POD_IP"}
# Env names the chart (or a value set, through extraEnv) sets for a reader other than config/settings.py.
READ_ELSEWHERE = {
    # The backup (issue 13 §1: its settings; the CronJob also passes BACKUP_URL as --to).
    "BACKUP_URL": "backup_fleet",
    "BACKUP_RETENTION": "backup_fleet",
    "AWS_S3_ENDPOINT_URL": "django-storages",
    "AWS_S3_REGION_NAME": "django-storages",
    "AWS_ACCESS_KEY_ID": "boto3",
    "AWS_SECRET_ACCESS_KEY": "boto3",
    "PGSSLROOTCERT": "libpq (psycopg)",
}
ALERT_RULES = CHART / "files" / "alerts.yaml"
# Custom resources: no schema in kubernetes-validate; checked by the tests below instead.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def test_helm_is_helm_3():
    result = helm("version", "--short")
    assert result.returncode == 0 and result.stdout.startswith("v3."), result.stdout + result.stderr


def test_value_sets_exist():
    assert {"minimal", "existing-secret", "ingress", "monitoring", "production"} <= set(VALUE_SETS)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(value_set):
    result = helm("lint", "--strict", str(CHART), "-f", str(values_file(value_set)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_manifest_is_valid_for_kubernetes_1_30(value_set):
    docs = render(value_set)
    for doc in docs:
        kind = (doc["apiVersion"], doc["kind"])
        if kind in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.json_path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(exc.message)


def test_default_install_renders_the_production_shape():
    docs = render("minimal")
    kinds = sorted((d["kind"], d["metadata"]["name"].removeprefix(FULLNAME)) for d in docs)
    assert kinds == sorted(
        [
            ("ConfigMap", ""),
            ("ConfigMap", "-migrate"),
            ("Secret", ""),
            ("Secret", "-migrate"),
            ("ServiceAccount", ""),
            ("Deployment", "-api"),
            ("Deployment", "-ws"),
            ("Deployment", "-worker"),
            ("Deployment", "-beat"),
            ("Job", "-migrate"),
            ("Service", "-api"),
            ("Service", "-ws"),
            ("PodDisruptionBudget", "-api"),
            ("PodDisruptionBudget", "-ws"),
            ("Pod", "-test-connection"),  # a `helm test` hook: only `helm test` creates it
        ]
    )
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)


# --- the processes ---


def normalized(command: list[str]) -> list[str]:
    """run_prod's child command without the interpreter: [python, -m, celery, ...] → [celery, ...]."""
    if command[1:2] == ["-m"]:
        return command[2:]
    if command[1].endswith("manage.py"):
        return ["manage.py", *command[2:]]
    return command


def test_commands_match_the_production_processes():
    """Each Deployment runs what `make run-prod` runs (config/run_prod.py)."""
    docs = render("minimal")
    local = {name: normalized(command) for name, command in child_commands().items()}
    api = container(docs, "api")["command"]
    assert api[:2] == local["gunicorn"][:2] == ["gunicorn", "config.wsgi"]
    assert api[api.index("--forwarded-allow-ips") + 1] == ""  # Django's NUM_PROXIES decides, as in run_prod
    # The worker class that reads requests within a deadline, and its threads (issue 8: slow clients).
    # config.gunicorn_conf: the workers' metrics summed (prometheus_client multiprocess mode).
    for option in ("--config", "--worker-class", "--forwarded-allow-ips", "--graceful-timeout", "--timeout"):
        assert api[api.index(option) + 1] == local["gunicorn"][local["gunicorn"].index(option) + 1], option
    assert api[api.index("--worker-class") + 1] == "config.gunicorn.ThreadWorker"
    threads = yaml.safe_load((CHART / "values.yaml").read_text())["api"]["threads"]
    assert api[api.index("--threads") + 1] == str(threads) == str(settings.GUNICORN_THREADS)

    ws = container(docs, "ws")["command"]
    assert ws[:2] == ["python", "manage.py"]
    assert ws[2:4] == local["daphne"][1:3] == ["serve", "--no-beat"]

    # -q: no banner, only log lines (LOG_FORMAT=json: one JSON object per line; config/celery.py)
    worker = container(docs, "worker")["command"]
    assert worker[:5] == local["worker"][:5] == ["celery", "-A", "config", "-q", "worker"]
    assert worker[worker.index("--hostname") + 1] == f"{FULLNAME}@%h"

    beat = container(docs, "beat")["command"]
    assert beat[:5] == local["beat"][:5] == ["celery", "-A", "config", "-q", "beat"]
    assert beat[beat.index("--scheduler") + 1] == settings.CELERY_BEAT_SCHEDULER
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"


def test_gunicorn_workers_and_worker_concurrency_come_from_values():
    docs = render("ingress")
    api = container(docs, "api")["command"]
    assert api[api.index("--workers") + 1] == "4"
    api = container(render("minimal", "api.threads=16", "api.timeout=120"), "api")["command"]
    assert api[api.index("--threads") + 1] == "16"
    assert api[api.index("--timeout") + 1] == "120"
    assert "CELERY_WORKER_CONCURRENCY" not in env_map(container(docs, "worker"))  # null: one per CPU
    docs = render("minimal")
    assert env_map(container(docs, "worker"))["CELERY_WORKER_CONCURRENCY"]["value"] == "2"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_beat_is_exactly_one_replica_replaced_with_recreate(value_set):
    beat = deployment(render(value_set), "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_beat_replicas_is_not_a_value():
    assert "Additional property replicas is not allowed" in render_error("minimal", "beat.replicas=2")


def test_replicas_from_values():
    docs = render("ingress")
    assert {c: deployment(docs, c)["spec"]["replicas"] for c in COMPONENTS} == {
        "api": 3,
        "ws": 3,
        "worker": 2,
        "beat": 1,
    }
    docs = render("minimal", "api.replicas=5", "ws.replicas=4")
    assert deployment(docs, "api")["spec"]["replicas"] == 5
    assert deployment(docs, "ws")["spec"]["replicas"] == 4


# --- the migrate job ---


def test_migrate_job_is_a_pre_install_pre_upgrade_hook():
    docs = render("minimal")
    job = one(docs, "Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    (cont,) = job["spec"]["template"]["spec"]["containers"]
    script = cont["command"][-1]
    assert cont["command"][:2] == ["/bin/sh", "-ec"]
    assert [line.strip() for line in script.strip().splitlines()] == [
        "python manage.py migrate --noinput",
        "python manage.py sync_schedules",
    ]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_migrate_job_reads_only_hook_resources_that_exist_before_it(value_set):
    """A pre-install hook runs before the release's own ConfigMap, Secret and ServiceAccount exist."""
    docs = render(value_set)
    job = one(docs, "Job", f"{FULLNAME}-migrate")
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    earlier_hooks = {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if is_hook(d)
        and int(d["metadata"]["annotations"].get("helm.sh/hook-weight", "0")) < job_weight
        and "pre-install" in d["metadata"]["annotations"]["helm.sh/hook"]
    }
    release_owned = {(d["kind"], d["metadata"]["name"]) for d in docs if not is_hook(d)}
    spec = job["spec"]["template"]["spec"]
    (cont,) = spec["containers"]
    needed = {("ConfigMap", ref["configMapRef"]["name"]) for ref in cont["envFrom"] if "configMapRef" in ref}
    needed |= {
        ("Secret", e["valueFrom"]["secretKeyRef"]["name"])
        for e in cont["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    if "serviceAccountName" in spec:
        needed.add(("ServiceAccount", spec["serviceAccountName"]))
    for kind, name in needed:
        assert (kind, name) not in release_owned, f"the migrate job needs {kind} {name}, made after it"
        chart_made = name.startswith(FULLNAME)
        assert not chart_made or (kind, name) in earlier_hooks, f"{kind} {name} is no earlier hook"
    # The hook copies hold the same data as the release's own.
    for kind in ("ConfigMap", "Secret"):
        own, copy = find(docs, kind, FULLNAME), find(docs, kind, f"{FULLNAME}-migrate")
        assert [d["data"] for d in own] == [d["data"] for d in copy]


# --- routing: /api/v1/ws to daphne, the rest to gunicorn ---


def container_port(cont: dict, name_or_number) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in cont["ports"] if p["name"] == name_or_number]
    return port


def listening_port(component: str, cont: dict) -> int:
    command = cont["command"]
    if component == "api":
        return int(command[command.index("--bind") + 1].rsplit(":", 1)[1])
    return int(command[command.index("--port") + 1])


@pytest.mark.parametrize("value_set", ["ingress", "minimal"])
def test_ws_path_reaches_daphne_and_the_rest_gunicorn(value_set):
    docs = render(value_set, "ingress.enabled=true")
    (ingress,) = find(docs, "Ingress")
    for rule in ingress["spec"]["rules"]:
        paths = {p["path"]: p for p in rule["http"]["paths"]}
        assert set(paths) == {"/api/v1/ws", "/"}
        assert all(p["pathType"] == "Prefix" for p in paths.values())
        for path, component in (("/api/v1/ws", "ws"), ("/", "api")):
            backend = paths[path]["backend"]["service"]
            service = one(docs, "Service", backend["name"])
            (svc_port,) = [
                p
                for p in service["spec"]["ports"]
                if p.get("name") == backend["port"].get("name") or p["port"] == backend["port"].get("number")
            ]
            pods = deployment(docs, component)["spec"]["template"]
            assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
            cont = container(docs, component)
            port = container_port(cont, svc_port["targetPort"])
            assert port == listening_port(component, cont), f"{path}: Service port is not where it listens"
            if component == "ws":
                assert cont["command"][2:4] == ["serve", "--no-beat"] and port == 8001
            else:
                assert cont["command"][0] == "gunicorn" and port == 8000


@pytest.mark.parametrize("component", ["api", "ws"])
def test_probes_use_the_health_endpoints_of_the_serving_process(component):
    cont = container(render("minimal"), component)
    assert cont["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert cont["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # Starting is the process coming up, not the database: a slow database must not restart it.
    assert cont["startupProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = container_port(cont, cont[probe]["httpGet"]["port"])
        assert port == listening_port(component, cont)


def test_ingress_sets_the_public_url_and_trusts_one_proxy():
    docs = render("ingress")
    data = one(docs, "ConfigMap", FULLNAME)["data"]
    assert data["PUBLIC_URL"] == "https://manager.example.com"
    assert data["CSRF_TRUSTED_ORIGINS"] == "https://manager.example.com"
    assert data["NUM_PROXIES"] == "1"
    assert data["WS_PORT"] == "0"  # websocketUrl keeps the request's port: the ingress routes by path
    annotations = one(docs, "Ingress", FULLNAME)["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    without = one(render("minimal"), "ConfigMap", FULLNAME)["data"]
    assert without["NUM_PROXIES"] == "0" and "PUBLIC_URL" not in without
    explicit = one(render("monitoring"), "ConfigMap", FULLNAME)["data"]
    assert explicit["NUM_PROXIES"] == "2" and explicit["PUBLIC_URL"] == "https://manager.example.net"
    plain = one(render("minimal", "ingress.enabled=true"), "ConfigMap", FULLNAME)["data"]
    assert plain["PUBLIC_URL"] == "http://manager.example.com"  # no TLS for the host


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_allowed_hosts_take_the_pod_ip_for_probes_and_scrapes(value_set):
    docs = render(value_set)
    for name, spec in pod_specs(docs).items():
        for cont in spec["containers"]:
            env = [e["name"] for e in cont["env"]]
            assert env.index("POD_IP") < env.index("ALLOWED_HOSTS"), name  # $(POD_IP) needs it first
            hosts = env_map(cont)["ALLOWED_HOSTS"]["value"].split(",")
            assert "$(POD_IP)" in hosts and f"{FULLNAME}-api" in hosts and f"{FULLNAME}-ws" in hosts
            if value_set == "ingress":
                assert "manager.example.com" in hosts


# --- security ---


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem(value_set):
    docs = render(value_set)
    specs = pod_specs(docs) | helm_test_pods(docs)
    expected = {"api", "ws", "worker", "beat", "migrate", "test-connection"}
    if values(value_set).get("backup", {}).get("enabled"):
        expected.add("backup")
    assert {name.removeprefix(f"{FULLNAME}-") for name in specs} == expected
    for name, spec in specs.items():
        pod_ctx = spec["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for cont in spec["containers"] + spec.get("initContainers", []):
            ctx = cont["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["runAsNonRoot"] is True and ctx.get("runAsUser", 1) != 0, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), name
            tmp = [m for m in cont["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp must be writable"
            assert "resources" in cont and cont["resources"]["limits"]["memory"], name


def test_the_pods_run_as_the_images_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"^ARG APP_UID=(\d+)$", dockerfile, re.M).group(1))
    for spec in pod_specs(render("minimal")).values():
        assert spec["securityContext"]["runAsUser"] == uid
        assert spec["securityContext"]["runAsGroup"] == spec["securityContext"]["fsGroup"] == uid


def secret_values(value_set: str) -> list[str]:
    """The secret values a value set gives, and the passwords inside its URLs."""
    v = values(value_set)
    found = [v.get("secretKey", ""), v.get("fieldEncryptionKeys", "")]
    s3 = v.get("backup", {}).get("s3", {})
    found += [s3.get("accessKeyId", ""), s3.get("secretAccessKey", "")]
    found += [key.split(":", 1)[1] for key in v.get("fieldEncryptionKeys", "").split(",") if ":" in key]
    for service in ("database", "redis"):
        url = v.get(service, {}).get("url", "")
        found.append(url)
        password = re.match(r"^[a-z]+://[^:/@]*:([^@]+)@", url)
        if password:
            found.append(password.group(1))
    return [value for value in found if value]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_secret_value_in_any_configmap_or_plain_env(value_set):
    docs = render(value_set)
    secrets = secret_values(value_set)
    plain = [yaml.safe_dump(cm["data"]) for cm in find(docs, "ConfigMap")]
    for spec in pod_specs(docs).values():
        for cont in spec["containers"]:
            plain += [str(e.get("value", "")) for e in cont["env"]] + cont["command"]
            for name in SECRET_ENV:
                assert "secretKeyRef" in env_map(cont)[name]["valueFrom"], f"{name} must come from a Secret"
    for secret in secrets:
        assert not any(secret in text for text in plain), "a secret value is outside the Secrets"
    stored = [base64.b64decode(v).decode() for s in find(docs, "Secret") for v in s.get("data", {}).values()]
    assert all(secret in stored or any(secret in s for s in stored) for secret in secrets)


def test_existing_secrets_are_used_and_no_secret_is_rendered():
    docs = render("existing-secret")
    assert not find(docs, "Secret")
    v = values("existing-secret")
    expected = {
        "SECRET_KEY": (v["existingSecret"], v["existingSecretKeys"]["secretKey"]),
        "FIELD_ENCRYPTION_KEYS": (v["existingSecret"], v["existingSecretKeys"]["fieldEncryptionKeys"]),
        "DATABASE_URL": (v["database"]["existingSecret"], v["database"]["existingSecretKey"]),
        "REDIS_URL": (v["redis"]["existingSecret"], "REDIS_URL"),
    }
    for spec in pod_specs(docs).values():
        (cont,) = spec["containers"]
        env = env_map(cont)
        for name, (secret, key) in expected.items():
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
        assert spec["serviceAccountName"] == "promsnmp"  # an existing ServiceAccount, the Job included


def test_database_url_from_an_existing_secret_with_the_keys_in_values():
    docs = render("minimal", "database.existingSecret=pg", "database.url=")
    (secret,) = find(docs, "Secret", FULLNAME)
    assert set(secret["data"]) == {"SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "REDIS_URL"}
    env = env_map(container(docs, "api"))
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "DATABASE_URL"}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": "REDIS_URL"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ((), "secretKey is required: set secretKey and fieldEncryptionKeys, or existingSecret"),
        (("secretKey=s",), "fieldEncryptionKeys is required"),
        (("secretKey=s", "fieldEncryptionKeys=k1"), "fieldEncryptionKeys must look like id:base64"),
        (("existingSecret=mine",), "database.url is required"),
        (("existingSecret=mine", "database.url=postgres://db/x"), "redis.url is required"),
        (("existingSecret=mine", "database.url=sqlite:///x", "redis.url=redis://r"), "postgres"),
    ],
)
def test_missing_or_bad_secrets_stop_the_render_with_a_clear_message(sets, message):
    assert message in render_error(None, *sets)


def test_the_schema_refuses_secrets_among_the_plain_settings():
    assert "config.extra" in render_error("minimal", "config.extra.SECRET_KEY=oops")


# --- settings ---


def chart_env_names() -> set[str]:
    names = set()
    for value_set in VALUE_SETS:
        docs = render(value_set)
        for cm in find(docs, "ConfigMap"):
            names |= set(cm["data"])
        for spec in pod_specs(docs).values():
            for cont in spec["containers"]:
                names |= {e["name"] for e in cont["env"]}
    return names - CHART_ONLY_ENV


def test_every_env_name_the_chart_sets_is_read_by_the_settings():
    source = (ROOT / "config" / "settings.py").read_text()
    names = chart_env_names()
    assert {"PUBLIC_URL", "NUM_PROXIES", "HEARTBEAT_INTERVAL_SECONDS", "FAILOVER_GRACE_SECONDS"} <= names
    assert set(READ_ELSEWHERE) <= names  # each is set by some value set: none of them is stale
    unknown = sorted(name for name in names - set(READ_ELSEWHERE) if f'"{name}"' not in source)
    assert not unknown, f"not read by config/settings.py: {unknown}"


def test_settings_values_land_in_the_configmap():
    data = one(render("ingress"), "ConfigMap", FULLNAME)["data"]
    assert data["LEADER_CHECK_INTERVAL_SECONDS"] == "10"
    assert data["FAILOVER_GRACE_SECONDS"] == "20"
    assert data["HEARTBEAT_INTERVAL_SECONDS"] == "30"
    assert data["HEARTBEAT_TIMEOUT_SECONDS"] == "90"
    assert data["DB_POOL_MAX_SIZE"] == "4"
    assert data["CELERY_QUEUE"] == data["CHANNEL_LAYER_PREFIX"] == data["THROTTLE_CACHE_PREFIX"] == FULLNAME
    assert data["LOG_FORMAT"] == "json"


@pytest.mark.parametrize(
    ("sets", "annotation"),
    [
        (("config.leaderCheckIntervalSeconds=20",), "checksum/config"),
        (("secretKey=other",), "checksum/secret"),
    ],
)
def test_a_changed_setting_rolls_every_deployment(sets, annotation):
    before, after = render("minimal"), render("minimal", *sets)
    for component in COMPONENTS:
        old = deployment(before, component)["spec"]["template"]["metadata"]["annotations"]
        new = deployment(after, component)["spec"]["template"]["metadata"]["annotations"]
        assert old[annotation] != new[annotation], component


# --- availability, monitoring, network ---


@pytest.mark.parametrize("component", ["api", "ws"])
def test_disruption_budgets_select_the_api_and_ws_pods(component):
    docs = render("ingress")
    pdb = one(docs, "PodDisruptionBudget", f"{FULLNAME}-{component}")
    labels = deployment(docs, component)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_service_monitor_scrapes_metrics_of_api_and_ws():
    docs = render("monitoring")
    (monitor,) = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    selected = []
    for service in find(docs, "Service"):
        labels = service["metadata"]["labels"]
        if selector["matchLabels"].items() <= labels.items() and all(
            labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]
        ):
            selected.append(labels["app.kubernetes.io/component"])
            assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert sorted(selected) == ["api", "ws"]
    assert not find(render("minimal"), "ServiceMonitor")


# The PrometheusRule CRD's shape (monitoring.coreos.com/v1, spec.groups[].rules[]): what the operator
# accepts, since kubernetes-validate has no schema for it.
RULE_GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


def test_prometheus_rule_ships_the_alert_rules_file():
    docs = render("monitoring")
    (rule,) = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert DNS_SUBDOMAIN.match(rule["metadata"]["name"]) and rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    # The groups are the rule file's, as promtool tests it (tests/deploy/test_alert_rules.py).
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]
    names = set()
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP_KEYS and group["name"] not in names and group["rules"]
        names.add(group["name"])
        for item in group["rules"]:
            assert set(item) <= RULE_KEYS and ("alert" in item) != ("record" in item), item
            assert isinstance(item["expr"], str) and item["expr"].strip()
            assert DURATION.match(item.get("for", "0")), item
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in item.get(key, {}).values()), item
    assert not find(render("minimal"), "PrometheusRule")


def test_deploy_rule_file_is_the_charts():
    """One source: deploy/prometheus/alerts.yaml is a link to the file the chart ships."""
    deployed = ROOT / "deploy" / "prometheus" / "alerts.yaml"
    assert deployed.is_symlink() and deployed.resolve() == ALERT_RULES.resolve()


def test_network_policies_open_only_the_http_ports():
    docs = render("monitoring")
    policies = {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p for p in find(docs, "NetworkPolicy")}
    assert set(policies) == {"api", "ws", "worker", "beat", "migrate"}
    (test_pod,) = find(docs, "Pod")
    for component, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        if component in ("api", "ws"):
            (rule,) = spec["ingress"]
            assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
            # The two namespaces of ingressFrom, and the `helm test` Pod.
            assert len(rule["from"]) == 3
            peer = rule["from"][2]["podSelector"]["matchLabels"]
            assert peer.items() <= test_pod["metadata"]["labels"].items()
        else:
            assert spec["ingress"] == []
        dns = spec["egress"][0]["ports"]
        assert {p["port"] for p in dns} == {53}
        assert any(p.get("port") == 5432 for rule in spec["egress"] for p in rule.get("ports", []))
    assert not find(render("minimal"), "NetworkPolicy")
    with_backup = render("monitoring", "backup.enabled=true", "backup.url=s3://bucket/manager")
    backup = one(with_backup, "NetworkPolicy", f"{FULLNAME}-backup")["spec"]
    assert backup["ingress"] == [] and backup["egress"][1:] == values("monitoring")["networkPolicy"]["egress"]
    assert backup["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "backup"


# --- metadata ---


def test_app_version_is_the_projects_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    image = container(render("minimal"), "api")["image"]
    assert image.endswith(f":{project['version']}")
    assert container(render("minimal", "image.digest=sha256:" + "a" * 64), "api")["image"].endswith(
        "@sha256:" + "a" * 64
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_standard_labels_everywhere(value_set):
    for doc in render(value_set):
        labels = doc["metadata"]["labels"]
        if doc["kind"] == "CronJob":
            pod_labels = doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            assert pod_labels["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"]
        for key in ("name", "instance", "version", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, f"{doc['kind']} {doc['metadata']['name']}: {key}"
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
            assert selector["app.kubernetes.io/component"] == doc["metadata"]["name"].rsplit("-", 1)[1]
