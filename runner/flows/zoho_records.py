"""Placeholder until this flow lands."""

FLOWS: list[object] = []
