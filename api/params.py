"""Path parameters shared by every router: ids checked before any storage call."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from archiver.layout import check_id

__all__ = ["ExecutionId", "WorkflowId"]


def _execution_id(
    execution_id: Annotated[
        str, Path(alias="executionId", description="the engine's execution id")
    ],
) -> str:
    return check_id(execution_id, "executionId")


def _workflow_id(
    workflow_id: Annotated[str, Path(alias="workflowId", description="the workflow's id")],
) -> str:
    return check_id(workflow_id, "workflowId")


ExecutionId = Annotated[str, Depends(_execution_id)]
WorkflowId = Annotated[str, Depends(_workflow_id)]
