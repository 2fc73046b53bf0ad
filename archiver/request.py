"""The capture request: one parser for every way in (HTTP ``POST /snapshots``, CLI ``put``).

A capture request is a JSON object ``{executionId, workflow, ...}`` (``docs/api.md``). Both entry
points hand the object they read to :func:`parse_capture_request`, so they accept and refuse
exactly the same bodies, naming the same field. The parser checks the request's shape: an
object, only known fields, the required ones present, ``triggerType`` a string. The values are
then checked by ``Archive.capture_snapshot`` (ids, the workflow, variables, times ...), which both
entry points call with :meth:`CaptureRequest.arguments`.

To add a field: one line in ``CAPTURE_FIELDS`` (wire name → ``capture_snapshot`` keyword), a
check in ``parse_capture_request`` if its shape needs one, and the keyword in
``Archive.capture_snapshot``; ``api/schemas.py``'s ``CaptureRequest`` documents it (a test keeps
the two lists equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from archiver.errors import InvalidInput

__all__ = [
    "CAPTURE_FIELDS",
    "CAPTURE_SOURCES",
    "REQUIRED_FIELDS",
    "CaptureRequest",
    "parse_capture_request",
]

# Every field a capture request may hold: wire name (camelCase) → ``capture_snapshot`` keyword.
CAPTURE_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "executionId": "execution_id",
        "workflow": "workflow",
        "workflowId": "workflow_id",
        "variables": "variables",
        "triggerType": "trigger_type",
        "triggerData": "trigger_data",
        "userId": "user_id",
        "createdAt": "created_at",
        "replayOf": "replay_of",
        "source": "source",
    }
)
REQUIRED_FIELDS = ("executionId", "workflow")
#: the values of ``source``: how a capture that was not taken before the run came about
#: (``backfill``: imported from an engine's database afterwards; ``post-run``: an engine
#: integration took it when the run ended, the pre-run moment being out of its reach)
CAPTURE_SOURCES = ("backfill", "post-run")


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """A capture request whose shape is checked: its fields by wire name (absent ones left out;
    a JSON ``null`` counts as absent)."""

    fields: Mapping[str, Any]

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``Archive.capture_snapshot``."""
        return {CAPTURE_FIELDS[name]: value for name, value in self.fields.items()}


def _field_name(key: object) -> str:
    """An unknown key as a field name: itself when short and printable."""
    text = key if isinstance(key, str) else str(key)
    return text if len(text) <= 64 and text.isprintable() else "<key>"


def parse_capture_request(body: object) -> CaptureRequest:
    """Check a capture request's shape; raises InvalidInput naming the offending field."""
    if not isinstance(body, Mapping):
        raise InvalidInput("a capture request must be a JSON object", field="body")
    unknown = sorted(_field_name(k) for k in body if k not in CAPTURE_FIELDS)
    if unknown:
        raise InvalidInput("unknown field", field=unknown[0])
    for required in REQUIRED_FIELDS:
        if body.get(required) is None:
            raise InvalidInput(f"{required} is required", field=required)
    trigger_type = body.get("triggerType")
    if trigger_type is not None and not isinstance(trigger_type, str):
        raise InvalidInput("triggerType must be a string", field="triggerType")
    source = body.get("source")
    if source is not None and source not in CAPTURE_SOURCES:
        raise InvalidInput("source must be one of: " + ", ".join(CAPTURE_SOURCES), field="source")
    return CaptureRequest(MappingProxyType({k: v for k, v in body.items() if v is not None}))
