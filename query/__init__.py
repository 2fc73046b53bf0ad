"""The read side: DuckDB over the Parquet index manifests, and lookups built on it."""

from __future__ import annotations

from query.catalog import Catalog
from query.history import (
    ExecutionItem,
    HistoryPage,
    VersionItem,
    current_version,
    executions_by_hash,
    version_list,
    workflow_history,
)
from query.manifests import ManifestCache

__all__ = [
    "Catalog",
    "ExecutionItem",
    "HistoryPage",
    "ManifestCache",
    "VersionItem",
    "current_version",
    "executions_by_hash",
    "version_list",
    "workflow_history",
]
