"""The sites app's part of the Site admin: an adapter around sites.services (create, update, delete).

The form checks input with the API's own input serializer (one set of rules: cron, IANA time zone,
ranges); saving calls site_create / site_update / site_delete with the admin user as the actor, so
configVersion moves exactly as through the API and every write leaves an AuditLog row.

SiteAdminBase is not registered here: the Site admin is registered once, in fleet/admin.py, composed of
this base and what the apps above contribute (instances: the status columns, the instances inline and
"Force election"; fleet: "Refresh inventory"). So this module imports no app above sites.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from core.admin import ServiceErrorsAsMessages, admin_actor
from core.errors import NotFoundError, flatten_fields
from sites.api import SitePatchIn
from sites.models import CONFIG_FIELDS, Site
from sites.services import CONFIG_MODEL_FIELDS, PROFILE_FIELDS, site_create, site_delete, site_update

EDITABLE_FIELDS = (*PROFILE_FIELDS, *CONFIG_MODEL_FIELDS)
# the API's input names (dotted error paths) → the form's fields
_FORM_FIELD = {"description": "description", **{f"config.{w}": f for w, f in CONFIG_FIELDS.items()}}


class SiteForm(forms.ModelForm):
    class Meta:
        model = Site
        fields = ("id", *EDITABLE_FIELDS)
        help_texts = {
            "id": "Slug: lowercase letters, digits, '-' and '_'. Cannot be changed later.",
            "timezone": "IANA time zone, e.g. America/Chicago.",
            "discovery_cron": 'Six fields, seconds first ("0 0 2 * * *"), or the classic five.',
            "collection_interval": "Milliseconds.",
            "cache_expiration": "Milliseconds.",
        }

    def clean(self):
        """The API's rules for what the model alone does not check (cron, time zone, ranges)."""
        data = super().clean()
        config = {wire: data[field] for wire, field in CONFIG_FIELDS.items() if data.get(field) is not None}
        body = {"config": config}
        if data.get("description") is not None:
            body["description"] = data["description"]
        checked = SitePatchIn(data=body)
        if checked.is_valid():
            for wire, value in checked.validated_data.get("config", {}).items():
                data[CONFIG_FIELDS[wire]] = value  # normalised as the API would (a stripped cron)
            return data
        for path, texts in flatten_fields(checked.errors).items():
            field = _FORM_FIELD.get(path)
            if field is None or field not in self.fields:
                self.add_error(None, f"{path}: {' '.join(texts)}")
            elif field not in self.errors:  # a field's own error says it already
                self.add_error(field, texts)
        return data


# What the manager keeps on a site row (shown, never edited): the "State" fieldset. The composed admin
# puts what derives from the site's instances (status, leader) before these.
STATE_FIELDS = (
    "leader_term",
    "inventory_version",
    "inventory_updated_at",
    "device_count",
    "agent_count",
    "seed_count",
    "last_discovery_at",
    "created_at",
    "updated_at",
)


def site_fieldsets(state_fields: tuple[str, ...]) -> tuple:
    """The Site admin's fieldsets, with `state_fields` (shown, never edited) in the "State" one."""
    return (
        (None, {"fields": ("id", "label", "description")}),
        ("Location", {"fields": ("address", "latitude", "longitude")}),
        (
            "Configuration",
            {
                "fields": (
                    "timezone",
                    "min_replicas",
                    "discovery_enabled",
                    "discovery_cron",
                    "collection_interval",
                    "cache_expiration",
                    "cache_max_entries",
                    "require_instance_tokens",
                    "config_version",
                )
            },
        ),
        ("State", {"fields": state_fields}),
    )


# The site's own fields to filter on (its status is computed from its instances: not a column to filter
# by; the instances' part adds "leader" and "instance drift"). search_fields also serve every select of a
# site (autocomplete_fields, core.admin.AutocompleteFilter): thousands of sites are never one <select>.
SITE_LIST_FILTERS = ("discovery_enabled", "require_instance_tokens", "created_at")


class SiteAdminBase(ServiceErrorsAsMessages, admin.ModelAdmin):
    """The form, the fields and the writes of the Site admin (registered by fleet/admin.py)."""

    form = SiteForm
    list_display = ("id", "label", "config_version", "leader_term", "inventory_version")
    list_filter = SITE_LIST_FILTERS
    search_fields = ("id", "label", "address")
    fieldsets = site_fieldsets(STATE_FIELDS)
    readonly_fields = ("config_version", *STATE_FIELDS)

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing derived to show before the site exists
            return [
                (name, {"fields": [f for f in opts["fields"] if f not in self.readonly_fields]})
                for name, opts in self.fieldsets
                if name != "State"
            ]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else ("id", *self.readonly_fields)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()  # what a site holds, once it exists

    # --- writes, through sites.services ---

    def save_model(self, request, obj, form, change):
        values = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS}
        if change:
            site = site_update(actor=admin_actor(request), site_id=obj.pk, values=values, partial=False)
        else:
            site = site_create(actor=admin_actor(request), site_id=form.cleaned_data["id"], values=values)
        # The admin goes on with `obj` (history entry, messages, redirect): make it the saved row.
        for field in Site._meta.concrete_fields:
            setattr(obj, field.attname, getattr(site, field.attname))
        obj._state.adding = False
        obj._state.db = site._state.db

    def delete_model(self, request, obj):
        site_delete(actor=admin_actor(request), site_id=obj.pk)

    def delete_queryset(self, request, queryset):
        actor = admin_actor(request)
        for site_id in queryset.values_list("pk", flat=True):
            try:
                site_delete(actor=actor, site_id=site_id)
            except NotFoundError:
                continue  # deleted meanwhile

    def get_deleted_objects(self, objs, request):
        # site_delete removes what the site owns (instances, tokens bound to it, …) as the API's
        # DELETE does; the confirmation page lists them, but only the site's delete permission counts.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected
