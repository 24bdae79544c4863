"""drf-spectacular extensions and hooks: our authenticators, the spec's path and parameter names."""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def only_canonical_paths(endpoints, **kwargs):
    """Each route is also served with a trailing slash; the schema lists the spec's form only."""
    return [endpoint for endpoint in endpoints if not endpoint[0].endswith("/")]


def camel_case_path_parameters(result, **kwargs):
    """{site_id} → {siteId}, as the spec writes its paths."""
    paths = {}
    for template, operations in result["paths"].items():
        paths[re.sub(r"{(\w+)}", lambda m: "{" + _camel(m[1]) + "}", template)] = operations
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path":
                    parameter["name"] = _camel(parameter["name"])
    result["paths"] = paths
    return result


# Answers any API operation may give whatever it is, with a Retry-After header (core/throttling.py,
# core/admission.py): documented once here rather than on every view.
SHEDDING_RESPONSES = {
    "429": "Rate limit of this token (or of the site's registrations) reached; retry after Retry-After.",
    "503": "The server is beyond capacity and sheds this request; retry after Retry-After.",
}


def rate_limit_responses(result, **kwargs):
    """429 and 503, each with Retry-After, on every operation."""
    retry_after = {
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    }
    for operations in result["paths"].values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in SHEDDING_RESPONSES.items():
                operation["responses"].setdefault(
                    status,
                    {
                        "description": description,
                        "headers": retry_after,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "core.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (psm_…) with scopes read, write, admin or instance.",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "core.authentication.StaffSessionAuthentication"
    name = "adminSession"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "Staff logged in to /admin.",
        }
