"""The admin site's name, what every layer's admin shares, and the admin for API tokens and the audit log:
adapters around core.services, no logic of their own.

Every write calls a service with the logged-in user as the actor, so it leaves an AuditLog row.
Tokens are created through a form (the plaintext is shown once, on the page that answers the POST,
and kept nowhere: not in the session, a message or a cookie) and revoked with an action or the
"Revoke" button of a token's page; they are never edited or deleted. The audit log is read-only.
"""

from __future__ import annotations

import json

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from core.audit import Actor
from core.authentication import client_ip
from core.errors import ApiError, NotFoundError
from core.models import ApiToken, AuditLog, Scope
from core.services import token_create, token_revoke

# --- the admin site ------------------------------------------------------------------------------

# What the admin says it is, on every page (the login page too) instead of "Django administration".
PRODUCT_NAME = "PromSNMP Cloud Manager"
admin.site.site_header = PRODUCT_NAME
admin.site.site_title = PRODUCT_NAME
admin.site.index_title = "Fleet administration"
admin.site.site_url = None  # nothing is served at "/": no "View site" link to a 404

# django-celery-beat's own models are ours to write (core.schedules, discovery.schedules rebuild them
# from the sites' and seeds' fields and from settings), not an operator's: edited by hand they would be
# overwritten or fire twice. Not in the admin, not even for superusers (docs/decisions.md).
for _beat_model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    if admin.site.is_registered(_beat_model):
        admin.site.unregister(_beat_model)


def admin_actor(request) -> Actor:
    """The logged-in admin user as the actor of a service call: the audit log's who and from where."""
    return Actor.user(request.user, client_ip(request))


def error_text(exc: ApiError) -> str:
    """A service's error as one line for message_user()."""
    fields = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in exc.fields.items())
    return f"{exc.detail} {fields}".strip()


class ReadOnlyAdmin:
    """Mixin for admin pages (and inlines) that only look: the rows are written by services, which keep
    versions, events and the audit log right. An action that writes through a service asks for the
    user's own Django permission with model_permission()."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def model_permission(self, request, action: str) -> bool:
        """The user's Django permission `action` ("change", "delete", …) on this admin's model."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class ServiceErrorsAsMessages:
    """Mixin: a service error raised while saving (a race the form could not see: the site was
    deleted meanwhile, …) becomes an error message and a redirect instead of a 500."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ApiError as exc:  # the admin's transaction has rolled back
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApiError as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            )


class AutocompleteFilter(admin.FieldListFilter):
    """A list filter on a foreign key to a model with thousands of rows (sites): one text input for the
    related object's id, with suggestions from the admin's own autocomplete view (the related admin's
    search_fields) as the operator types, where Django's default renders one link per row.

    list_filter = (("site", AutocompleteFilter), …). The query parameter is Django's own
    (`site__id__exact`), so links built for the default filter keep working. A plain id column that is
    not a foreign key (the audit log's site_id) names, in `source`, a foreign key to the same model whose
    autocomplete serves the suggestions. Without view permission on the related model the input takes
    an id without suggestions (the autocomplete view would refuse).
    """

    template = "admin/core/autocomplete_filter.html"
    source: tuple[str, str, str] | None = None  # (app_label, model_name, field name) of a foreign key

    def __init__(self, field, request, params, model, model_admin, field_path):
        if field.is_relation:
            self.parameter_name = f"{field_path}__{field.target_field.name}__exact"
            self.source_field = field
        else:
            self.parameter_name = f"{field_path}__exact"
            app_label, model_name, field_name = self.source
            self.source_field = apps.get_model(app_label, model_name)._meta.get_field(field_name)
        super().__init__(field, request, params, model, model_admin, field_path)
        related = self.source_field.remote_field.model
        self.title = related._meta.verbose_name
        value = self.used_parameters.get(self.parameter_name) or [""]
        self.value = str(value[-1] if isinstance(value, list) else value).strip()
        try:
            related_admin = model_admin.admin_site.get_model_admin(related)
        except NotRegistered:
            related_admin = None
        self.suggest = related_admin is not None and related_admin.has_view_permission(request)

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name]

    def queryset(self, request, queryset):
        if not self.value:  # an empty input is no filter
            return queryset
        return queryset.filter(**{self.parameter_name: self.value})

    def get_facet_counts(self, pk_attname, filtered_qs) -> dict:
        return {}  # a count per related row is what this filter is here to avoid

    def choices(self, changelist):
        source = self.source_field
        yield {
            "parameter": self.parameter_name,
            "value": self.value,
            "selected": bool(self.value),
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
            # the other filters and the search, kept when this one is submitted
            "hidden": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
            "autocomplete_query": (
                f"app_label={source.model._meta.app_label}&model_name={source.model._meta.model_name}"
                f"&field_name={source.name}"
                if self.suggest
                else ""
            ),
        }


# --- API tokens ----------------------------------------------------------------------------------


class ApiTokenCreateForm(forms.ModelForm):
    """Parses the add form; token_create() makes the token (and checks the same rules again)."""

    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_days = forms.IntegerField(
        label="Expires in (days)",
        required=False,
        min_value=1,
        max_value=3650,
        help_text="Leave empty for a token that does not expire.",
    )

    class Meta:
        model = ApiToken
        fields = ("name", "scopes", "site")
        help_texts = {"site": "Bind the token to one site: it then gets 403 for every other site."}


class TokenHolderFilter(admin.SimpleListFilter):
    """Operators' tokens apart from the instances' own (one per registered instance: thousands)."""

    title = "issued to"
    parameter_name = "issued_to"

    def lookups(self, request, model_admin):
        return (("operator", "operators and integrations"), ("instance", "instances (their own token)"))

    def queryset(self, request, queryset):
        if self.value() == "operator":
            return queryset.filter(instance_id="")
        if self.value() == "instance":
            return queryset.exclude(instance_id="")
        return queryset


class SiteIdFilter(AutocompleteFilter):
    """The audit log's site_id (a plain column: rows outlive their site), suggested from the sites."""

    source = ("core", "apitoken", "site")


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceErrorsAsMessages, admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "site",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "created_at",
    )
    list_select_related = ("site",)
    list_filter = (("site", AutocompleteFilter), TokenHolderFilter)
    search_fields = ("name", "prefix", "id", "instance_id")
    autocomplete_fields = ("site",)
    date_hierarchy = "created_at"
    actions = ("revoke_tokens",)
    # token_hash is never shown.
    detail_fields = (
        "id",
        "name",
        "prefix",
        "scope_list",
        "site",
        "instance_id",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "created_at",
        "created_by",
    )
    add_fields = ("name", "scopes", "site", "expires_days")

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiToken) -> str:
        return ", ".join(obj.scopes)

    # Created once, then only revoked: no editing, no deleting.
    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        return super().has_change_permission(request)

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.detail_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.detail_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def add_view(self, request, form_url="", extra_context=None):
        # The answer to the POST is the page with the plaintext: nothing to continue or add from.
        extra_context = {**(extra_context or {}), "show_save_and_continue": False}
        extra_context["show_save_and_add_another"] = False
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        token, plaintext = token_create(
            actor=admin_actor(request),
            name=data["name"],
            scopes=data["scopes"],
            site_id=data["site"].pk if data["site"] else None,
            expires_days=data["expires_days"],
        )
        # The admin goes on with `obj` (history entry, response): make it the token just created.
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(token, field.attname))
        obj._state.adding = False
        obj._state.db = token._state.db
        obj._plaintext = plaintext  # lives as long as this request, never stored

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "title": "API token created",
            "opts": self.opts,
            "token": obj,
            "plaintext": obj._plaintext,
        }
        response = TemplateResponse(request, "admin/core/apitoken/created.html", context)
        add_never_cache_headers(response)
        return response

    # --- revoke: the list's action, and the "Revoke" button of a token's page (a confirmation, then POST)

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_revoke"
        view = self.admin_site.admin_view(self.revoke_view)
        return [path("<path:object_id>/revoke/", view, name=name), *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_revoke"] = (
            obj is not None and obj.revoked_at is None and self.has_revoke_permission(request)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def revoke_view(self, request, object_id):
        """GET: what revoking this token does, and a button; POST: token_revoke()."""
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        token = self.get_object(request, unquote(object_id))
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        if token is None:
            self.message_user(request, f"No API token {unquote(object_id)!r}.", messages.ERROR)
            return HttpResponseRedirect(changelist)
        change_url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[quote(token.pk)]
        )
        if token.revoked_at is not None:
            self.message_user(request, f"{token.name} is already revoked.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        if request.method == "POST":
            try:
                token_revoke(actor=admin_actor(request), token_id=token.pk)
            except NotFoundError as exc:  # gone meanwhile (its site or instance was deleted)
                self.message_user(request, error_text(exc), messages.ERROR)
                return HttpResponseRedirect(changelist)
            self.message_user(request, f"Revoked {token.name} ({token.prefix}…).", messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke the API token?",
            "opts": self.opts,
            "token": token,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/core/apitoken/revoke_confirmation.html", context)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request, queryset):
        actor = admin_actor(request)
        revoked, already = [], []
        for token in queryset:
            if token.revoked_at is not None:
                already.append(token.name)
                continue
            try:
                token_revoke(actor=actor, token_id=token.pk)
            except NotFoundError:
                continue  # gone meanwhile (its site was deleted)
            revoked.append(token.name)
        if revoked:
            self.message_user(
                request, f"Revoked {len(revoked)} token(s): {', '.join(revoked)}.", messages.SUCCESS
            )
        if already:
            self.message_user(request, f"Already revoked: {', '.join(already)}.", messages.WARNING)


# --- audit log -----------------------------------------------------------------------------------


# Written by services only, never edited or removed.
@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "action",
        "entity_type",
        "entity_id",
        "site_id",
        "instance_id",
        "actor",
        "ip_address",
    )
    list_filter = ("action", "entity_type", ("site_id", SiteIdFilter))
    search_fields = ("entity_id", "site_id", "actor")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "action",
        "entity_type",
        "entity_id",
        "site_id",
        "instance_id",
        "actor",
        "user_id",
        "token_id",
        "ip_address",
        "request_id",
        "details_pretty",
    )
    readonly_fields = fields
    show_full_result_count = False  # the log grows without bound; no COUNT(*) of all of it per page

    @admin.display(description="details")
    def details_pretty(self, obj: AuditLog) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True, default=str))
