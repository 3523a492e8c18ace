"""Building table-model objects cheaply: `construct(AuditRecord, flow=..., ...)`.

`AuditRecord(...)` runs SQLModel's constructor: every default factory is introspected with
`inspect.signature` on each call (pydantic asks whether the factory wants the validated data), and every
field is set through pydantic's and SQLAlchemy's `__setattr__`. Nothing is validated for a table model
anyway, so that is tens of microseconds per object for nothing, paid per record on the runner's hot path
(an audit record and a job per synced record).

`construct` builds the same object the way the ORM builds one it loads: an instrumented instance without
`__init__`, its field values (given, or the field's default, or its default factory's result) written
straight into the instance dict. The object is transient and behaves as one made by the constructor:
`session.add` inserts it, attribute assignment is tracked as usual afterwards, `model_dump` sees every
field and `model_fields_set` the given ones. Like the constructor, it does not validate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel

Model = TypeVar("Model", bound=SQLModel)


@dataclass(frozen=True)
class _Plan:
    names: frozenset[str]
    # (field name, default factory or None, default): one of the two applies when the field is not given
    fields: tuple[tuple[str, Any, Any], ...]


@cache
def _plan(model: type[SQLModel]) -> _Plan:
    if getattr(model, "__table__", None) is None:
        raise TypeError(f"{model.__name__} is not a table model")
    # A fresh process may build an object before any query has configured the mappers; the instance's
    # attribute implementations exist only once they are (make_transient_to_detached needs them).
    configure_mappers()
    fields = tuple((name, info.default_factory, info.default) for name, info in model.model_fields.items())
    return _Plan(frozenset(model.model_fields), fields)


def construct(model: type[Model], /, **values: Any) -> Model:
    """A new, transient `model` row object with `values` and the defaults of the other fields, built
    without SQLModel's per-field constructor (see the module docstring). A field with neither a value nor
    a default stays unset (reads as None, inserts as NULL), as with the constructor; an unknown field
    raises TypeError, where the constructor would drop it silently."""
    plan = _plan(model)
    unknown = values.keys() - plan.names
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    obj: Model = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    state = obj.__dict__
    for name, factory, default in plan.fields:
        if name in values:
            state[name] = values[name]
        elif factory is not None:
            state[name] = factory()
        elif default is not PydanticUndefined:
            # As pydantic does for a plain default: a copy, so no two objects share a mutable one.
            state[name] = (
                default
                if isinstance(default, (str, int, float, bool, type(None)))
                else copy.deepcopy(default)
            )
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    return obj
