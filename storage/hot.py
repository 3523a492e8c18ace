"""Reads on the runner's hot path, one transaction per job (or per batch) instead of one per question.

`job_state` answers everything a job needs to know before it starts, in one read: the integration, when
each of its two connections was last edited (so a cached client is reused only while it is current), and
which mapping rows are active for the flow and for the lookup tables. Mapping rows are never edited in
place (saving makes a new version, a new row), so a spec read once can be kept by its row id: the state
names the active row ids and `mapping_specs` loads only the ones the caller has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import session_scope
from storage.lookups import PREFIX
from storage.models import Connection, Integration, Mapping


@dataclass(frozen=True)
class ActiveRow:
    id: int
    flow: str
    version: int


@dataclass
class JobState:
    integration: Integration | None
    connections: dict[int, datetime] = field(default_factory=dict)  # connection id → updated_at
    flow_mapping: ActiveRow | None = None  # the flow's active mapping row (None: the flow's default)
    lookups: list[ActiveRow] = field(default_factory=list)  # active stored lookup tables


def job_state(engine: Engine, *, integration_id: int, flow: str) -> JobState:
    """The integration, its connections' edit stamps and the active mapping rows, in one transaction."""
    with session_scope(engine) as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return JobState(None)
        wanted = {integration.source_connection_id, integration.target_connection_id}
        stamps = {
            int(cid): updated
            for cid, updated in session.exec(
                select(Connection.id, Connection.updated_at).where(col(Connection.id).in_(sorted(wanted)))
            ).all()
        }
        rows = session.exec(
            select(Mapping.id, Mapping.flow, Mapping.version).where(
                col(Mapping.integration_id) == integration_id,
                col(Mapping.active),
                or_(col(Mapping.flow) == flow, col(Mapping.flow).startswith(PREFIX)),
            )
        ).all()
    state = JobState(integration, stamps)
    for row_id, row_flow, version in sorted(rows, key=lambda r: r[0] or 0):
        row = ActiveRow(int(row_id or 0), row_flow, int(version))
        if row_flow == flow:
            # One row is active per flow; should two be, the first wins, as in crud.active_mapping.
            state.flow_mapping = state.flow_mapping or row
        else:
            state.lookups.append(row)
    return state


def mapping_specs(engine: Engine, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The specs of mapping rows by id (rows never change once written, so callers may keep them)."""
    if not ids:
        return {}
    with session_scope(engine) as session:
        found = session.exec(select(Mapping.id, Mapping.spec).where(col(Mapping.id).in_(sorted(ids)))).all()
    return {int(row_id or 0): dict(spec or {}) for row_id, spec in found}
