"""Instance admin (read-only: instances register themselves) and the instances' part of the Site admin.

Actions are a few lines around instances.election.leader_assign and instances.services.
instance_deregister, with the admin user as the actor (so each leaves an AuditLog row); errors are
reported with message_user.

The Site admin (registered once, in fleet/admin.py) takes from here its status, instance count and
leader columns (SiteInstancesColumns), the instances inline and the "Force election" action.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from core.admin import ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from instances.election import leader_assign
from instances.liveness import liveness
from instances.models import Instance
from instances.selectors import site_status, sites_with_instances
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
    "capabilities",
    "labels",
    "metrics",
)


class LivenessColumn:
    @admin.display(description="liveness")
    def liveness_status(self, instance: Instance) -> str:
        """From the heartbeat's age; the instance's own report is the separate reported_status."""
        return liveness(instance.last_heartbeat, timezone.now())


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
        "last_heartbeat",
    )
    list_filter = ("site", "is_leader")
    list_select_related = ("site",)
    search_fields = ("id", "hostname", "pod_name")
    fields = INSTANCE_DETAIL_FIELDS
    readonly_fields = INSTANCE_DETAIL_FIELDS
    actions = ("make_leader", "deregister")

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

    def _state(self, site: Site) -> tuple[str, int, str | None, int]:
        """(status, healthy, leader id, instance count), computed once per row."""
        if not hasattr(site, "_admin_state"):
            instances = list(site.instances.all())
            status, healthy, leader = site_status(site, instances, timezone.now())
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
        leader_id = self._state(site)[2]
        if leader_id is None:
            return "-"
        hostname = next((i.hostname for i in site.instances.all() if i.pk == leader_id), "")
        return f"{leader_id} ({hostname})"


@admin.action(description="Force election (healthiest follower)", permissions=["change"])
def force_election(modeladmin: admin.ModelAdmin, request, queryset) -> None:
    """Site admin action: each selected site's leader becomes its healthiest follower."""
    actor = admin_actor(request)
    for site_id in queryset.values_list("pk", flat=True):
        try:
            change = leader_assign(site_id=site_id, actor=actor)
        except ApiError as exc:
            modeladmin.message_user(request, f"{site_id}: {error_text(exc)}", messages.ERROR)
            continue
        modeladmin.message_user(
            request,
            f"{site_id}: leader {change.previous_leader_id or 'none'} → {change.leader_id} "
            f"(leaderTerm {change.term}).",
            messages.SUCCESS,
        )
