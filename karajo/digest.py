"""
The configuration digest of a cluster node (docs/cluster.md, "Same
configuration"): SHA-256 over the canonical JSON of every job and setting,
so nodes started from different files show a warning (API, dashboard,
C{karajo check}) instead of quietly behaving differently.

Left out, because they may differ between nodes of one cluster:
C{listen_address}, C{dir_base}, C{[cluster] node} and C{[cluster]
database} (one database may be reached by different addresses), and
where each value was written (file and line).  Secrets are in (hashed,
never shown): nodes verifying webhooks with different secrets are a
mistake worth a warning.  Pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from karajo.model import Environment

__all__ = ["config_digest"]

#: Per value class, the fields that are not configuration: where it was
#: written, what validation derived from other fields, code.
_SKIP = frozenset({"origin", "call", "rules", "payload_vars"})
_ENV_SKIP = frozenset({"listen_address", "dir_base"})
_CLUSTER_SKIP = frozenset({"node", "database"})


def _plain(value: Any, skip: frozenset[str] = _SKIP) -> Any:
    if attrs.has(type(value)):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in attrs.fields(type(value))
            if f.name not in skip and f.init
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def config_digest(env: Environment) -> str:
    """The hex SHA-256 of C{env}'s configuration (see the module docstring)."""
    document = _plain(env, _SKIP | _ENV_SKIP | {"cluster"})
    if env.cluster is not None:
        document["cluster"] = _plain(env.cluster, _SKIP | _CLUSTER_SKIP)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
