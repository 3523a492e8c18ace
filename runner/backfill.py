"""Placeholder until backfill lands."""

from __future__ import annotations

from typing import Any


async def execute(services: Any, job: Any, *, worker: str) -> str:
    raise NotImplementedError("backfill has not landed yet")
