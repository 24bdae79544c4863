"""Reads of sites. What derives from a site's instances (status, counts, leader) is read in
instances/selectors.py, the layer that knows both."""

from __future__ import annotations

from django.conf import settings

from core.errors import NotFoundError
from sites.models import Site


def site_get(site_id: str) -> Site:
    """The site, or a 404 (NotFoundError) for every API that takes a site id in its path."""
    site = Site.objects.filter(pk=site_id).first()
    if site is None:
        raise NotFoundError(f"No site {site_id!r}.")
    return site


def site_exists(site_id: str) -> bool:
    return Site.objects.filter(pk=site_id).exists()


def instance_config(site: Site) -> dict:
    """The configuration as an instance sees it (register response, GET /sites/{id}/config)."""
    return {
        "discoveryEnabled": site.discovery_enabled,
        "discoveryCron": site.discovery_cron,
        "discoveryTimezone": site.timezone,
        "collectionInterval": site.collection_interval,
        "cacheExpiration": site.cache_expiration,
        "cacheMaxEntries": site.cache_max_entries,
        "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS * 1000,
    }


def site_requires_instance_tokens(site_id: str) -> bool:
    """Whether the site's config turns enrolment tokens into "register only" (requireInstanceTokens)."""
    return Site.objects.filter(pk=site_id, require_instance_tokens=True).exists()
