"""Prefixed random identifiers: inst_…, tok_…, dev_… (the spec's style)."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
