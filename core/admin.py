"""Admin for API tokens and the audit log: adapters around core.services, no logic of their own.

Every write calls a service with the logged-in user as the actor, so it leaves an AuditLog row.
Tokens are created through a form (the plaintext is shown once, on the page that answers the POST,
and kept nowhere: not in the session, a message or a cookie) and revoked with an action; they are
never edited or deleted. The audit log is read-only.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from core.audit import Actor
from core.authentication import client_ip
from core.errors import ApiError, NotFoundError
from core.models import ApiToken, AuditLog, Scope
from core.services import token_create, token_revoke


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
    list_filter = ("site",)
    search_fields = ("name", "prefix", "id")
    date_hierarchy = "created_at"
    actions = ("revoke_tokens",)
    # token_hash is never shown.
    detail_fields = (
        "id",
        "name",
        "prefix",
        "scope_list",
        "site",
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
    list_filter = ("action", "entity_type")
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
