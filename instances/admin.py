"""Instance admin (read-only: instances register themselves) and the instances' part of the Site admin.

Actions are a few lines around instances.election.leader_assign and instances.services.
instance_deregister, with the admin user as the actor (so each leaves an AuditLog row); errors are
reported with message_user.

The Site admin (registered once, in fleet/admin.py) takes from here its status, instance count and
leader columns (SiteInstancesColumns), its leader and drift filters, the instances inline and the
"Force election" action (a page to choose the new leader, then leader_assign).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.db.models import Exists, OuterRef
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import AutocompleteFilter, ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from core.selectors import instance_tokens
from instances.election import leader_assign, live_followers
from instances.liveness import liveness
from instances.models import Instance
from instances.selectors import drifting_q, is_drifting, site_status, sites_with_instances, with_version_lags
from instances.services import instance_deregister
from sites.models import Site

INSTANCE_DETAIL_FIELDS = (
    "id",
    "site",
    "hostname",
    "pod_name",
    "version",
    "is_leader",
    "leader_since",
    "liveness_status",
    "reported_status",
    "last_heartbeat",
    "registered_at",
    "uptime",
    "inventory_version",
    "config_version",
    "config_version_sent",
    "drift",
    "tokens",
    "capabilities",
    "labels",
    "metrics",
)


class LivenessColumn:
    @admin.display(description="liveness")
    def liveness_status(self, instance: Instance) -> str:
        """From the heartbeat's age; the instance's own report is the separate reported_status."""
        return liveness(instance.last_heartbeat, timezone.now())


def instance_link(instance_id: str, hostname: str) -> str:
    """An instance by its hostname, its id on hover, linking to its page."""
    url = reverse("admin:instances_instance_change", args=[quote(instance_id)])
    return format_html('<a href="{}" title="{}">{}</a>', url, instance_id, hostname or instance_id)


class DriftFilter(admin.SimpleListFilter):
    """Live instances behind their site's config or inventory version (instances.selectors.drifting_q)."""

    title = "drift"
    parameter_name = "drift"

    def lookups(self, request, model_admin):
        return (("yes", "drifting (versions behind)"), ("no", "in step"))

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        drifting = with_version_lags(Instance.objects.all()).filter(drifting_q()).values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=drifting)
        return queryset.exclude(pk__in=drifting)


# Instances register themselves; the admin looks, moves leadership and deregisters ("Deregister", not
# delete: it hands leadership over first).
@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin, LivenessColumn, admin.ModelAdmin):
    list_display = (
        "id",
        "site",
        "hostname",
        "pod_name",
        "version",
        "is_leader",
        "liveness_status",
        "reported_status",
        "drift",
        "last_heartbeat",
    )
    list_filter = (("site", AutocompleteFilter), "is_leader", DriftFilter)
    list_select_related = ("site",)
    search_fields = ("id", "hostname", "pod_name")
    fields = INSTANCE_DETAIL_FIELDS
    readonly_fields = INSTANCE_DETAIL_FIELDS
    actions = ("make_leader", "deregister")

    def get_queryset(self, request):
        return with_version_lags(super().get_queryset(request))  # the drift column, no query per row

    @admin.display(description="drift")
    def drift(self, instance: Instance) -> str:
        """How far a live instance is behind its site (the InstanceConfigDrift / InstanceInventoryDrift
        alerts' measure, without their 10 minutes); "-" when in step, offline or unknown."""
        config, inventory = instance.config_lag, instance.inventory_lag
        if not is_drifting(config, inventory, liveness(instance.last_heartbeat, timezone.now())):
            return "-"
        lags = (("config", config), ("inventory", inventory))
        behind = ", ".join(f"{what} {lag} behind" for what, lag in lags if lag is not None and lag > 0)
        return format_html('<span class="drift">{}</span>', behind)

    @admin.display(description="API tokens")
    def tokens(self, instance: Instance) -> str:
        """The instance's own token (issued by register): revoked from the token's page."""
        tokens = list(instance_tokens(instance.pk))
        if not tokens:
            return "-"
        return format_html_join(
            ", ",
            '<a class="instance-token" href="{}">{} ({}…){}</a>',
            (
                (
                    reverse("admin:core_apitoken_change", args=[quote(token.pk)]),
                    token.name,
                    token.prefix,
                    ", revoked" if token.revoked_at else "",
                )
                for token in tokens
            ),
        )

    def get_fields(self, request, obj=None):
        if request.user.has_perm("core.view_apitoken"):
            return self.fields
        return tuple(field for field in self.fields if field != "tokens")  # a link they could not follow

    def has_leadership_permission(self, request) -> bool:
        return self.model_permission(request, "change")

    def has_deregister_permission(self, request) -> bool:
        return self.model_permission(request, "delete")

    @admin.action(description="Make leader (manual assignment)", permissions=["leadership"])
    def make_leader(self, request, queryset):
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(request, "Select exactly one instance to make leader.", messages.ERROR)
            return
        instance = selected[0]
        try:
            change = leader_assign(
                site_id=instance.site_id, instance_id=instance.pk, actor=admin_actor(request)
            )
        except ApiError as exc:
            self.message_user(request, f"{instance.pk}: {error_text(exc)}", messages.ERROR)
            return
        self.message_user(
            request,
            f"{change.leader_id} is now the leader of {change.site_id} "
            f"(previous: {change.previous_leader_id or 'none'}, leaderTerm {change.term}).",
            messages.SUCCESS,
        )

    @admin.action(description="Deregister selected instances", permissions=["deregister"])
    def deregister(self, request, queryset):
        actor = admin_actor(request)
        done = []
        for instance_id in queryset.values_list("pk", flat=True):
            try:
                result = instance_deregister(actor=actor, instance_id=instance_id)
            except NotFoundError:
                continue  # deregistered meanwhile
            done.append(instance_id)
            if result.was_leader:
                self.message_user(
                    request,
                    f"{instance_id} was a leader; new leader: {result.new_leader_id or 'none'}.",
                    messages.WARNING if result.new_leader_id is None else messages.INFO,
                )
        self.message_user(request, f"Deregistered {len(done)} instance(s).", messages.SUCCESS)


class InstanceInline(ReadOnlyAdmin, LivenessColumn, admin.TabularInline):
    """The site's instances, read-only, each linking to its own page."""

    model = Instance
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "hostname",
        "pod_name",
        "version",
        "is_leader",
        "liveness_status",
        "reported_status",
        "last_heartbeat",
    )
    readonly_fields = fields
    ordering = ("registered_at",)


# --- the instances' part of the Site admin (composed in fleet/admin.py) -----------------------------

SITE_STATUS_COLUMNS = ("status", "instance_count", "leader")  # list columns, after the label
SITE_STATE_FIELDS = ("status", "leader")  # first in the "State" fieldset


class SiteInstancesColumns:
    """Site admin mixin: status, instance count and leader, from the site's instances
    (instances.selectors), computed once per row from one prefetch."""

    def get_queryset(self, request):
        return sites_with_instances(super().get_queryset(request))

    def _state(self, site: Site) -> tuple[str, int, Instance | None, int]:
        """(status, healthy, leader, instance count), computed once per row."""
        if not hasattr(site, "_admin_state"):
            instances = list(site.instances.all())
            status, healthy, leader_id = site_status(site, instances, timezone.now())
            leader = next((i for i in instances if i.pk == leader_id), None)
            site._admin_state = (status, healthy, leader, len(instances))
        return site._admin_state

    @admin.display(description="status")
    def status(self, site: Site) -> str:
        status, healthy, _, count = self._state(site)
        return f"{status} ({healthy}/{count} healthy)"

    @admin.display(description="instances")
    def instance_count(self, site: Site) -> int:
        return self._state(site)[3]

    @admin.display(description="leader")
    def leader(self, site: Site) -> str:
        """The leader by hostname, its id on hover."""
        leader = self._state(site)[2]
        return "-" if leader is None else instance_link(leader.pk, leader.hostname)


class SiteLeaderFilter(admin.SimpleListFilter):
    title = "leader"
    parameter_name = "has_leader"

    def lookups(self, request, model_admin):
        return (("yes", "has a leader"), ("no", "no leader"))

    def queryset(self, request, queryset):
        has_leader = Exists(Instance.objects.filter(site=OuterRef("pk"), is_leader=True))
        if self.value() == "yes":
            return queryset.filter(has_leader)
        if self.value() == "no":
            return queryset.filter(~has_leader)
        return queryset


class SiteDriftFilter(admin.SimpleListFilter):
    """Sites with a live instance behind their config or inventory version (DriftFilter's definition)."""

    title = "instance drift"
    parameter_name = "drift"

    def lookups(self, request, model_admin):
        return (("yes", "an instance drifts"), ("no", "every instance in step"))

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        drifting = with_version_lags(Instance.objects.all()).filter(drifting_q()).values("site_id")
        if self.value() == "yes":
            return queryset.filter(pk__in=drifting)
        return queryset.exclude(pk__in=drifting)


SITE_INSTANCE_FILTERS = (SiteLeaderFilter, SiteDriftFilter)


# --- "Force election": choose the new leader ---------------------------------------------------------

HEALTHIEST = "healthiest"  # the page's default choice: leader_assign picks the healthiest follower
MAX_ELECTION_SITES = 100  # one confirmation page, never thousands of rows


def _election_page(modeladmin: admin.ModelAdmin, request, site_ids: list[str]) -> TemplateResponse:
    """What the election would change, per selected site; with one site, a choice of its live followers."""
    now = timezone.now()
    sites = list(sites_with_instances(Site.objects.filter(pk__in=site_ids).order_by("pk")))
    candidates: dict[str, list[Instance]] = {site.pk: [] for site in sites}
    for instance in live_followers(site_ids, now):
        candidates[instance.site_id].append(instance)
    rows = []
    for site in sites:
        instances = list(site.instances.all())
        leader = next((i for i in instances if i.is_leader), None)
        live = candidates[site.pk]
        rows.append(
            {
                "site": site,
                "leader": leader,
                "leader_status": liveness(leader.last_heartbeat, now) if leader else None,
                "candidates": [(i, liveness(i.last_heartbeat, now)) for i in live],
                "healthiest": live[0] if live else None,
                "others": len(instances) - len(live) - (1 if leader else 0),  # neither leader nor fit to lead
            }
        )
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Force election",
        "subtitle": sites[0].pk if len(sites) == 1 else f"{len(sites)} sites",
        "opts": modeladmin.opts,
        "rows": rows,
        "choose": len(rows) == 1,
        "healthiest": HEALTHIEST,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/sites/site/force_election.html", context)


@admin.action(description="Force election (choose the new leader)", permissions=["change"])
def force_election(modeladmin: admin.ModelAdmin, request, queryset):
    """Site admin action. First a page (as Django's delete confirmation): one site → a choice of its live
    followers, the healthiest by default; several → the healthiest follower of each. Its POST calls
    leader_assign per site; what it refuses (the instance went away, is offline, already leads) is an
    error message and changes nothing."""
    site_ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: MAX_ELECTION_SITES + 1])
    if len(site_ids) > MAX_ELECTION_SITES:
        modeladmin.message_user(
            request, f"Force an election in at most {MAX_ELECTION_SITES} sites at a time.", messages.ERROR
        )
        return None
    if request.POST.get("post") != "yes":
        return _election_page(modeladmin, request, site_ids)
    choice = (request.POST.get("leader") or HEALTHIEST).strip()
    if choice != HEALTHIEST and len(site_ids) != 1:
        modeladmin.message_user(request, "Choose a new leader for one site at a time.", messages.ERROR)
        return None
    actor = admin_actor(request)
    for site_id in site_ids:
        try:
            change = leader_assign(
                site_id=site_id, instance_id=None if choice == HEALTHIEST else choice, actor=actor
            )
        except ApiError as exc:
            modeladmin.message_user(request, f"{site_id}: {error_text(exc)}", messages.ERROR)
            continue
        modeladmin.message_user(
            request,
            f"{site_id}: leader {change.previous_leader_id or 'none'} → {change.leader_id} "
            f"(leaderTerm {change.term}).",
            messages.SUCCESS,
        )
    return None
