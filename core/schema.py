"""drf-spectacular extensions and hooks: our authenticators, the spec's path and parameter names."""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from core import snmpconfig


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


def _text_schema(minimum: int = 1) -> dict:
    return {"type": "string", "minLength": minimum, "maxLength": snmpconfig.MAX_TEXT}


def _secret_schema(minimum: int = 1) -> dict:
    # "****" is the mask a GET shows: sent back it is refused, never stored as the secret.
    return {**_text_schema(minimum), "not": {"const": snmpconfig.MASK}}


def _absent_or(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, {"const": ""}, schema]}


def snmp_credentials_schema() -> dict:
    """SNMP credentials as core.snmpconfig.parse_snmp_credentials takes them: one variant per version
    and securityLevel, each naming what it requires. Fields of another variant are ignored."""
    passphrase = _secret_schema(snmpconfig.MIN_PASSPHRASE)
    community = {
        "type": "object",
        "title": "SNMP v1/v2c",
        "properties": {
            "version": {"enum": [1, 2]},
            "type": {"const": "community"},
            "readCommunity": _secret_schema(),
            "writeCommunity": _absent_or(_secret_schema()),
        },
        "required": ["version", "readCommunity"],
    }
    variants = [community]
    needs = {
        "noAuthNoPriv": {},
        "authNoPriv": {
            "authProtocol": {"enum": list(snmpconfig.AUTH_PROTOCOLS)},
            "authPassphrase": passphrase,
        },
    }
    needs["authPriv"] = {
        **needs["authNoPriv"],
        "privProtocol": {"enum": list(snmpconfig.PRIV_PROTOCOLS)},
        "privPassphrase": passphrase,
    }
    for level, extra in needs.items():
        variants.append(
            {
                "type": "object",
                "title": f"SNMP v3 {level}",
                "properties": {
                    "version": {"const": 3},
                    "type": {"const": "usm"},
                    "securityName": _text_schema(),
                    "securityLevel": {"const": level},
                    **extra,
                    "engineId": _absent_or(_text_schema()),
                },
                "required": ["version", "securityName", "securityLevel", *extra],
            }
        )
    return {
        "oneOf": variants,
        "description": 'Secrets are the secret itself: "****" (the mask a GET shows) is refused.',
    }


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
