"""``GET /v1/triggers``: the inbound webhook triggers this service accepts (any API key may read them).

Triggers are files of the deployment (``deployments/triggers/``), the same for every organisation. The listing says
where to send and what starts; it never says where a trigger's secret or public key lives.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from bulletin.edge.api.auth import Principal, principal
from bulletin.edge.api.openapi import error_responses
from bulletin.triggers import Trigger

router = APIRouter(tags=["triggers"])


class ConditionOut(BaseModel):
    path: str
    op: str
    value: Any = None


class TriggerOut(BaseModel):
    id: str
    description: str
    path: str
    scheme: str
    conditions: list[ConditionOut]
    action: dict[str, str]

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerOut:
        action = trigger.action
        target = {k: v for k in ("report", "deployment", "flow") if (v := getattr(action, k)) is not None}
        return cls(
            id=trigger.id,
            description=trigger.description,
            path=f"/v1/hooks/{trigger.id}",
            scheme=trigger.verify.scheme,
            conditions=[ConditionOut(path=c.path, op=c.op, value=c.value) for c in trigger.conditions],
            action=target,
        )


class TriggerList(BaseModel):
    triggers: list[TriggerOut]


@router.get("/v1/triggers", response_model=TriggerList, responses=error_responses(401))
async def list_triggers(request: Request, p: Principal = Depends(principal)) -> TriggerList:
    """Every trigger, by id: its URL path, verification scheme, conditions and what it starts."""
    triggers: dict[str, Trigger] = request.app.state.hooks.triggers
    return TriggerList(triggers=[TriggerOut.of(triggers[k]) for k in sorted(triggers)])
