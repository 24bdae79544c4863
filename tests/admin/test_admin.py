"""The Django admin for tokens, the audit log, sites and instances: every write goes through a service
and leaves an AuditLog row with the admin user as its actor. Driven with django.test.Client as a
logged-in superuser, on PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import admin as django_admin
from django.contrib.admin.utils import quote
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit import Actor
from core.authentication import hash_token
from core.models import ApiToken, AuditLog
from fleet.admin import SiteAdmin
from instances.admin import InstanceInline
from instances.models import Instance
from instances.services import instance_heartbeat
from sites.models import Site

ACTOR = "user:admin"
TOKEN_RE = re.compile(r"psm_[A-Za-z0-9_\-]{20,}")


@pytest.fixture
def admin(db, django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


class _FormScraper(HTMLParser):
    """What a browser would submit from the form with the given id (buttons left out)."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def _add(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        if tag == "option":
            if self._select and "selected" in attrs:
                self._add(self._select, attrs.get("value") or "")
            return
        name = attrs.get("name")
        if not name:
            return
        if tag == "input":
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self._add(name, attrs.get("value") or "on")
                return
            self._add(name, attrs.get("value") or "")
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            self._add(name, "")

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_data(response, form_id: str) -> dict[str, list[str] | str]:
    """The form's current values as a browser would post them; tests then change some."""
    assert response.status_code == 200, response.content[:500]
    scraper = _FormScraper(form_id)
    scraper.feed(response.content.decode())
    assert scraper.data, f"no form {form_id!r} on the page"
    return {name: values if len(values) > 1 else values[0] for name, values in scraper.data.items()}


def page(changelist: str, pk, view: str) -> str:
    """An object's admin page; ids are quoted as the admin does ("inst_4f…" would read as "instO…")."""
    return f"{changelist}{quote(pk)}/{view}/"


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def audit_rows(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action).order_by("id"))


def run_action(client: Client, changelist: str, action: str, ids: list[str], **extra):
    return client.post(changelist, {"action": action, "_selected_action": ids, **extra}, follow=True)


# --- API tokens ------------------------------------------------------------------------------------

TOKENS = "/admin/core/apitoken/"


def test_token_created_in_the_admin_is_shown_once_and_works(admin, make_site):
    make_site("chicago")
    form = admin.get(f"{TOKENS}add/")
    assert form.status_code == 200
    assert 'type="checkbox" name="scopes" value="read"' in form.content.decode()
    assert 'name="token_hash"' not in form.content.decode()

    created = admin.post(
        f"{TOKENS}add/", {"name": "grafana", "scopes": ["read"], "site": "chicago", "expires_days": "30"}
    )
    assert created.status_code == 200
    body = created.content.decode()
    plaintexts = TOKEN_RE.findall(body)
    assert len(plaintexts) == 1, plaintexts
    plaintext = plaintexts[0]
    assert "no-store" in created["Cache-Control"]

    token = ApiToken.objects.get(name="grafana")
    assert token.token_hash == hash_token(plaintext)
    assert token.scopes == ["read"] and token.site_id == "chicago"
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert token.created_by == ACTOR
    [row] = audit_rows("token_created")
    assert (row.actor, row.entity_id, row.ip_address) == (ACTOR, token.id, "127.0.0.1")

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    listed = api.get("/api/v1/sites")
    assert listed.status_code == 200
    assert [site["id"] for site in listed.json()["sites"]] == ["chicago"]

    # Never again: not on its page, the list, or its history; the hash is not shown either.
    for url in (page(TOKENS, token.id, "change"), TOKENS, page(TOKENS, token.id, "history")):
        response = admin.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        assert plaintext not in text and token.token_hash not in text, url
    detail = admin.get(page(TOKENS, token.id, "change")).content.decode()
    assert token.prefix in detail
    assert 'name="_save"' not in detail  # read-only: nothing to save


def test_token_add_form_rejects_bad_input_and_creates_nothing(admin):
    response = admin.post(f"{TOKENS}add/", {"name": "", "scopes": ["root"], "expires_days": "0"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"name", "scopes", "expires_days"}
    assert not TOKEN_RE.search(response.content.decode())
    assert ApiToken.objects.count() == 0
    assert audit_rows("token_created") == []


def test_tokens_are_revoked_never_edited_or_deleted(admin, make_token):
    plaintext = make_token(["read"])
    token = ApiToken.objects.get(token_hash=hash_token(plaintext))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/sites").status_code == 200

    changelist = admin.get(TOKENS).content.decode()
    assert 'value="revoke_tokens"' in changelist
    assert 'value="delete_selected"' not in changelist
    assert admin.get(page(TOKENS, token.id, "change")).status_code == 200  # it is there, and read-only
    assert admin.post(page(TOKENS, token.id, "change"), {"name": "renamed"}).status_code == 403
    assert admin.get(page(TOKENS, token.id, "delete")).status_code == 403
    assert admin.post(page(TOKENS, token.id, "delete"), {"post": "yes"}).status_code == 403

    response = run_action(admin, TOKENS, "revoke_tokens", [token.id])
    assert response.status_code == 200
    assert any("Revoked 1 token" in text for text in messages_of(response))
    token.refresh_from_db()
    assert token.name == "test read" and token.revoked_at is not None
    assert api.get("/api/v1/sites").status_code == 401
    [row] = audit_rows("token_revoked")
    assert (row.actor, row.entity_id) == (ACTOR, token.id)

    again = run_action(admin, TOKENS, "revoke_tokens", [token.id])
    assert any("Already revoked" in text for text in messages_of(again))
    assert len(audit_rows("token_revoked")) == 1


# --- audit log -------------------------------------------------------------------------------------

AUDIT = "/admin/core/auditlog/"


def test_audit_log_is_read_only(admin, make_site):
    make_site("chicago")
    row = AuditLog.objects.get(action="site_created")
    assert admin.get(f"{AUDIT}add/").status_code == 403
    assert admin.post(f"{AUDIT}add/", {"action": "forged"}).status_code == 403
    view = admin.get(page(AUDIT, row.id, "change"))
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert admin.post(page(AUDIT, row.id, "change"), {"action": "forged"}).status_code == 403
    assert admin.get(page(AUDIT, row.id, "delete")).status_code == 403
    assert admin.post(page(AUDIT, row.id, "delete"), {"post": "yes"}).status_code == 403
    changelist = admin.get(AUDIT)
    assert changelist.status_code == 200
    assert 'value="delete_selected"' not in changelist.content.decode()
    # the bulk delete action cannot be posted either
    admin.post(AUDIT, {"action": "delete_selected", "_selected_action": [row.id], "post": "yes"})
    row.refresh_from_db()
    assert row.action == "site_created"
    assert AuditLog.objects.filter(action="forged").count() == 0


def test_audit_log_filters_search_and_dates(admin, make_site, make_token):
    make_site("chicago")
    make_site("denver")
    make_token(["admin"])
    year = timezone.now().year

    def ids(query: str) -> set[str]:
        response = admin.get(f"{AUDIT}?{query}")
        assert response.status_code == 200, query
        return {(row.action, row.entity_id) for row in response.context["cl"].result_list}

    assert ids("action=site_created") == {("site_created", "chicago"), ("site_created", "denver")}
    assert {action for action, _ in ids("entity_type=api_token")} == {"token_created"}
    assert ids("q=denver") == {("site_created", "denver")}
    assert len(ids(f"created_at__year={year}")) == 3
    assert ids(f"created_at__year={year - 1}") == set()


# --- sites -----------------------------------------------------------------------------------------

SITES = "/admin/sites/site/"


def test_site_created_in_the_admin_goes_through_the_service(admin):
    data = form_data(admin.get(f"{SITES}add/"), "site_form")
    data.update(
        id="chicago-pop-01",
        label="Chicago POP 01",
        timezone="America/Chicago",
        discovery_cron="0 0 3 * * *",
        latitude="41.88",
        longitude="-87.63",
    )
    response = admin.post(f"{SITES}add/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    site = Site.objects.get(pk="chicago-pop-01")
    assert (site.label, site.timezone, site.discovery_cron) == (
        "Chicago POP 01",
        "America/Chicago",
        "0 0 3 * * *",
    )
    assert site.config_version == 1
    [row] = audit_rows("site_created")
    assert (row.actor, row.entity_id, row.site_id) == (ACTOR, "chicago-pop-01", "chicago-pop-01")


def test_site_change_in_the_admin_moves_config_version_only_on_config(admin, make_site, register):
    site_id = make_site("chicago")
    register(site_id, "host-a")  # the inline of instances is on the page and posted back
    url = page(SITES, site_id, "change")

    data = form_data(admin.get(url), "site_form")
    assert "instances-TOTAL_FORMS" in data
    data["discovery_cron"] = " 0 30 3 * * * "
    response = admin.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    site = Site.objects.get(pk=site_id)
    assert site.config_version == 2
    assert site.discovery_cron == "0 30 3 * * *"  # normalised as the API does
    [row] = audit_rows("site_updated")
    assert row.actor == ACTOR
    assert row.details["changes"] == {"discoveryCron": {"from": "0 0 2 * * *", "to": "0 30 3 * * *"}}
    assert row.details["configVersion"] == 2

    data = form_data(admin.get(url), "site_form")
    data["label"] = "Chicago, renamed"
    assert admin.post(url, data).status_code == 302
    site.refresh_from_db()
    assert (site.label, site.config_version) == ("Chicago, renamed", 2)
    assert list(audit_rows("site_updated")[-1].details["changes"]) == ["label"]

    # Saving the page unchanged is no write at all.
    assert admin.post(url, form_data(admin.get(url), "site_form")).status_code == 302
    assert len(audit_rows("site_updated")) == 2
    site.refresh_from_db()
    assert site.config_version == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("discovery_cron", "every night", "Invalid cron expression"),
        ("discovery_cron", "30 0 2 * * *", "seconds must be 0"),
        ("timezone", "Mars/Olympus_Mons", "is not an IANA time zone"),
        ("min_replicas", "0", "greater than or equal to 1"),
    ],
)
def test_bad_site_config_is_a_field_error_and_saves_nothing(admin, make_site, field, value, message):
    site_id = make_site("chicago")
    before = Site.objects.values().get(pk=site_id)
    audit_before = AuditLog.objects.count()
    url = page(SITES, site_id, "change")
    data = form_data(admin.get(url), "site_form")
    data[field] = value
    response = admin.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
    assert Site.objects.values().get(pk=site_id) == before
    assert AuditLog.objects.count() == audit_before

    data = form_data(admin.get(f"{SITES}add/"), "site_form")
    data.update({"id": "denver", "label": "Denver", field: value})
    response = admin.post(f"{SITES}add/", data)
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert not Site.objects.filter(pk="denver").exists()
    assert AuditLog.objects.count() == audit_before


def test_site_id_must_be_a_new_slug(admin, make_site):
    make_site("chicago")
    for site_id, message in (("Chicago Loop", "Lowercase letters"), ("chicago", "already exists")):
        data = form_data(admin.get(f"{SITES}add/"), "site_form")
        data.update(id=site_id, label="x")
        response = admin.post(f"{SITES}add/", data)
        assert response.status_code == 200
        assert message in " ".join(response.context["adminform"].form.errors["id"])
    assert list(Site.objects.values_list("pk", flat=True)) == ["chicago"]


def test_site_deleted_in_the_admin_goes_through_the_service(admin, make_site, register, make_token):
    site_id = make_site("chicago")
    register(site_id, "host-a")
    make_token(["instance"], site=site_id)
    url = page(SITES, site_id, "delete")
    confirm = admin.get(url)
    assert confirm.status_code == 200
    # What goes with the site is listed, and the read-only instance and token admins do not block it.
    assert confirm.context["perms_lacking"] == set()
    assert "host-a" in confirm.content.decode()

    assert admin.post(url, {"post": "yes"}).status_code == 302
    assert not Site.objects.filter(pk=site_id).exists()
    assert Instance.objects.count() == 0 and ApiToken.objects.count() == 0
    [row] = audit_rows("site_deleted")
    assert (row.actor, row.entity_id) == (ACTOR, site_id)


def test_delete_selected_sites_calls_the_service_per_site(admin, make_site):
    make_site("chicago")
    make_site("denver")
    make_site("boston")
    response = run_action(admin, SITES, "delete_selected", ["chicago", "denver"], post="yes")
    assert response.status_code == 200
    assert list(Site.objects.values_list("pk", flat=True)) == ["boston"]
    assert sorted((row.entity_id, row.actor) for row in audit_rows("site_deleted")) == [
        ("chicago", ACTOR),
        ("denver", ACTOR),
    ]


def test_site_changelist_shows_status_leader_and_versions(admin, make_site, register):
    site_id = make_site("chicago")
    make_site("empty")
    leader = register(site_id, "host-a")
    follower = register(site_id, "host-b")
    rows = {site.pk: site for site in admin.get(SITES).context["cl"].result_list}
    model_admin = admin.get(SITES).context["cl"].model_admin
    assert model_admin.status(rows["chicago"]) == "degraded (2/2 healthy)"  # both still "starting"
    for instance_id in (leader, follower):
        instance_heartbeat(actor=Actor.system("tests"), instance_id=instance_id, status="healthy")
    response = admin.get(SITES)
    assert response.status_code == 200
    rows = {site.pk: site for site in response.context["cl"].result_list}
    model_admin = response.context["cl"].model_admin
    assert model_admin.status(rows["chicago"]) == "healthy (2/2 healthy)"
    assert model_admin.instance_count(rows["chicago"]) == 2
    assert model_admin.leader(rows["chicago"]) == (  # by hostname, the id on hover
        f'<a href="{page(INSTANCES, leader, "change")}" title="{leader}">host-a</a>'
    )
    assert model_admin.status(rows["empty"]).startswith("offline")
    assert model_admin.leader(rows["empty"]) == "-"
    text = response.content.decode()
    for header in ("Status", "Instances", "Leader", "Config version", "Leader term", "Inventory version"):
        assert header in text


def test_the_site_admin_is_one_registration_composed_of_each_apps_part(admin, make_site):
    """sites gives the form, fields and writes, instances the status columns, the inline and forced
    election, discovery "Run discovery now", fleet the inventory refresh; fleet/admin.py registers the one
    class that composes them."""
    site_id = make_site("chicago")
    response = admin.get(page(SITES, site_id, "change"))
    model_admin = response.context["adminform"].model_admin
    assert type(model_admin) is SiteAdmin and django_admin.site._registry[Site] is model_admin
    assert model_admin.list_display == (
        *("id", "label", "status", "instance_count", "leader"),
        *("config_version", "leader_term", "inventory_version"),
    )
    request, site = response.wsgi_request, Site.objects.get()
    state = dict(model_admin.get_fieldsets(request, site))["State"]["fields"]
    assert state[:3] == ("status", "leader", "leader_term")
    assert [type(inline) for inline in model_admin.get_inline_instances(request, site)] == [InstanceInline]
    actions = list(model_admin.get_actions(request))
    assert actions == ["delete_selected", "force_election", "refresh_inventory", "run_discovery_now"]
    filters = [f if isinstance(f, str) else f.parameter_name for f in model_admin.list_filter]
    assert filters == ["discovery_enabled", "require_instance_tokens", "created_at", "has_leader", "drift"]


# --- instances and leadership ----------------------------------------------------------------------

INSTANCES = "/admin/instances/instance/"


def test_make_leader_moves_leadership_with_a_manual_assignment(admin, make_site, register):
    site_id = make_site("chicago")
    first = register(site_id, "host-a")
    second = register(site_id, "host-b")
    assert Site.objects.get(pk=site_id).leader_term == 1

    response = run_action(admin, INSTANCES, "make_leader", [second])
    assert any(f"{second} is now the leader" in text for text in messages_of(response))
    assert set(Instance.objects.filter(is_leader=True).values_list("pk", flat=True)) == {second}
    assert Site.objects.get(pk=site_id).leader_term == 2
    row = audit_rows("leader_assigned")[-1]
    assert row.actor == ACTOR
    assert row.details == {
        "leader": second,
        "previousLeader": first,
        "reason": "manual_assignment",
        "leaderTerm": 2,
    }


def test_make_leader_refuses_what_the_service_refuses(admin, make_site, register):
    site_id = make_site("chicago")
    first = register(site_id, "host-a")
    second = register(site_id, "host-b")
    third = register(site_id, "host-c")
    Instance.objects.filter(pk=third).update(last_heartbeat=timezone.now() - timedelta(minutes=10))

    cases = [
        ([first, second], "Select exactly one instance"),
        ([first], "already the leader"),
        ([third], "is offline"),
    ]
    for ids, expected in cases:
        response = run_action(admin, INSTANCES, "make_leader", ids)
        [message] = response.context["messages"]
        assert message.level_tag == "error" and expected in str(message), str(message)
    assert Site.objects.get(pk=site_id).leader_term == 1
    assert Instance.objects.get(is_leader=True).pk == first
    assert not AuditLog.objects.filter(actor=ACTOR).exists()


def test_force_election_picks_the_healthiest_follower(admin, make_site, register):
    site_id = make_site("chicago")
    first = register(site_id, "host-a")
    second = register(site_id, "host-b")
    register(site_id, "host-c")  # registered after host-b: its registration is its last heartbeat
    instance_heartbeat(actor=Actor.system("tests"), instance_id=second, status="healthy")  # now the freshest

    response = run_action(admin, SITES, "force_election", [site_id], post="yes")  # the page's default
    assert any(f"leader {first} → {second}" in text for text in messages_of(response))
    assert Instance.objects.get(is_leader=True).pk == second
    assert Site.objects.get(pk=site_id).leader_term == 2
    row = audit_rows("leader_assigned")[-1]
    assert (row.actor, row.details["reason"], row.details["previousLeader"]) == (
        ACTOR,
        "manual_assignment",
        first,
    )


def test_force_election_without_a_live_follower_is_an_error(admin, make_site, register):
    site_id = make_site("chicago")
    register(site_id, "host-a")
    response = run_action(admin, SITES, "force_election", [site_id], post="yes", leader="healthiest")
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "no live follower" in str(message)
    assert Site.objects.get(pk=site_id).leader_term == 1


def test_deregister_hands_leadership_over(admin, make_site, register):
    site_id = make_site("chicago")
    first = register(site_id, "host-a")
    second = register(site_id, "host-b")
    response = run_action(admin, INSTANCES, "deregister", [first])
    texts = messages_of(response)
    assert any("Deregistered 1 instance" in text for text in texts)
    assert any(f"new leader: {second}" in text for text in texts)
    assert list(Instance.objects.values_list("pk", "is_leader")) == [(second, True)]
    [row] = audit_rows("instance_deregistered")
    assert (row.actor, row.entity_id, row.details["wasLeader"]) == (ACTOR, first, True)
    assert audit_rows("leader_assigned")[-1].details["reason"] == "previous_leader_deregistered"


def test_instances_are_read_only(admin, make_site, register):
    instance_id = register(make_site("chicago"), "host-a")
    assert admin.get(f"{INSTANCES}add/").status_code == 403
    view = admin.get(page(INSTANCES, instance_id, "change"))
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert admin.post(page(INSTANCES, instance_id, "change"), {"hostname": "x"}).status_code == 403
    assert admin.get(page(INSTANCES, instance_id, "delete")).status_code == 403
    changelist = admin.get(INSTANCES).content.decode()
    assert 'value="delete_selected"' not in changelist
    assert 'value="make_leader"' in changelist and 'value="deregister"' in changelist
    assert Instance.objects.get(pk=instance_id).hostname == "host-a"


def test_instance_changelist_columns_and_filters(admin, make_site, register):
    site_id = make_site("chicago")
    make_site("denver")
    leader = register(site_id, "host-a")
    follower = register(site_id, "host-b")
    other = register("denver", "host-c")
    Instance.objects.filter(pk=follower).update(last_heartbeat=timezone.now() - timedelta(minutes=10))

    def listed(query: str = "") -> list[str]:
        response = admin.get(f"{INSTANCES}?{query}")
        assert response.status_code == 200, query
        return sorted(instance.pk for instance in response.context["cl"].result_list)

    assert listed() == sorted([leader, follower, other])
    assert listed("site__id__exact=chicago") == sorted([leader, follower])
    assert listed("is_leader__exact=1") == sorted([leader, other])
    model_admin = admin.get(INSTANCES).context["cl"].model_admin
    assert model_admin.liveness_status(Instance.objects.get(pk=leader)) == "healthy"
    assert model_admin.liveness_status(Instance.objects.get(pk=follower)) == "offline"


# --- every page renders ----------------------------------------------------------------------------


def test_every_admin_page_renders(admin, make_site, register, make_token):
    site_id = make_site("chicago")
    instance_id = register(site_id, "host-a")
    make_token(["read"], site=site_id)
    token = ApiToken.objects.get()
    audit = AuditLog.objects.first()
    pages = [
        "/admin/",
        TOKENS,
        f"{TOKENS}add/",
        page(TOKENS, token.id, "change"),
        AUDIT,
        page(AUDIT, audit.id, "change"),
        SITES,
        f"{SITES}add/",
        page(SITES, site_id, "change"),
        page(SITES, site_id, "history"),
        INSTANCES,
        page(INSTANCES, instance_id, "change"),
    ]
    for url in pages:
        assert admin.get(url).status_code == 200, url
    site_page = admin.get(page(SITES, site_id, "change")).content.decode()
    assert "host-a" in site_page and instance_id in site_page  # the inline, linking to the instance


@pytest.mark.parametrize(
    ("model_path", "action", "permission"),
    [
        ("instances.models.Instance", "make_leader", "change_instance"),
        ("instances.models.Instance", "deregister", "delete_instance"),
        ("discovery.models.DiscoveryRun", "cancel_runs", "change_discoveryrun"),
        ("inventory.models.Device", "delete_devices", "delete_device"),
        ("inventory.models.DiscoverySeed", "delete_seeds", "delete_discoveryseed"),
    ],
)
def test_read_only_pages_offer_their_service_actions_by_the_users_own_permission(
    db, django_user_model, rf, model_path, action, permission
):
    """The pages never add, change or delete rows themselves; an action that writes through a service
    is offered to a staff user exactly when they hold the model's Django permission for it."""
    from importlib import import_module

    from django.contrib import admin as django_admin
    from django.contrib.auth.models import Permission

    module, name = model_path.rsplit(".", 1)
    model = getattr(import_module(module), name)
    model_admin = django_admin.site._registry[model]
    user = django_user_model.objects.create_user("staff", password="unused", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename=f"view_{model._meta.model_name}"))
    request = rf.get("/admin/")
    request.user = user

    def offered() -> bool:
        request.user = django_user_model.objects.get(pk=user.pk)  # fresh: permissions are cached
        return action in model_admin.get_actions(request)

    assert not offered()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    user.user_permissions.add(Permission.objects.get(codename=permission))
    assert offered()
    assert not model_admin.has_change_permission(request) and not model_admin.has_delete_permission(request)
