"""The Zoho CRM emulator's records: module schemas, validation, insert/update/upsert/delete, rendering.

Everything here is in-memory state behind the emulator's lock; the HTTP layer lives in
`connectors.zoho.emulator`. Shapes follow /work/shared/api/zoho.md ("notes §n") and the examples of
Zoho's v8 OpenAPI (GitHub zoho/crm-oas `v8.0/record/operations/*/examples/`, "OAS example <op>").

Every mutating method returns the per-record results in input order plus the `Change`s it made, so
the caller can hand those to the notification channels (`connectors.zoho.emulator_watch`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

ID_BASE = 5725767000000400000  # record ids are 19-digit longs
MODULE_IDS = {
    "Accounts": "5725767000000002177",
    "Vendors": "5725767000000002181",
    "Contacts": "5725767000000002179",
}
EMULATOR_USER = {"name": "Emulator Admin", "id": "5725767000000411001", "email": "admin@emulator.test"}
TEXT_LENGTH = 255  # characters in a single-line text field
TEXTAREA_LENGTH = 32000  # characters in a multi-line field
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Mandatory fields in the standard layout (notes §2e) and the system duplicate-check field (notes §2c).
MANDATORY = {"Accounts": "Account_Name", "Vendors": "Vendor_Name", "Contacts": "Last_Name"}
SYSTEM_DUPLICATE_FIELD = {"Accounts": "Account_Name", "Vendors": "Vendor_Name", "Contacts": "Email"}
LOOKUPS = {
    "Accounts": {"Parent_Account": "Accounts"},
    "Contacts": {"Account_Name": "Accounts", "Vendor_Name": "Vendors"},
}
# Written by Zoho, never by a client: ignored on input, like the real API does with read-only fields.
READ_ONLY = frozenset({"id", "Created_Time", "Modified_Time", "Created_By", "Modified_By", "Full_Name"})


def _schema(module: str) -> dict[str, str]:
    """Field API name -> Zoho data_type for the standard fields the notes list (notes §2e)."""
    kinds = {"Description": "textarea", "Owner": "ownerlookup", "NetSuite_Id": "text"}
    if module == "Accounts":
        kinds |= {"Account_Name": "text", "Account_Number": "text", "Account_Type": "picklist"}
        kinds |= {"Phone": "phone", "Fax": "phone", "Website": "website", "Industry": "picklist"}
        kinds |= {"Employees": "integer", "Annual_Revenue": "currency", "Parent_Account": "lookup"}
        for prefix in ("Billing", "Shipping"):
            kinds |= {f"{prefix}_{part}": "text" for part in ("Street", "City", "State", "Code", "Country")}
    elif module == "Vendors":
        kinds |= {"Vendor_Name": "text", "Email": "email", "Phone": "phone", "Website": "website"}
        kinds |= {"Category": "text", "GL_Account": "picklist"}
        kinds |= {part: "text" for part in ("Street", "City", "State", "Zip_Code", "Country")}
    else:
        kinds |= {"First_Name": "text", "Last_Name": "text", "Full_Name": "text", "Title": "text"}
        kinds |= {"Email": "email", "Secondary_Email": "email", "Department": "text", "Date_of_Birth": "date"}
        kinds |= {name: "phone" for name in ("Phone", "Mobile", "Home_Phone", "Other_Phone", "Fax")}
        kinds |= {"Account_Name": "lookup", "Vendor_Name": "lookup"}
        for prefix in ("Mailing", "Other"):
            kinds |= {f"{prefix}_{part}": "text" for part in ("Street", "City", "State", "Zip", "Country")}
    kinds |= {"Created_Time": "datetime", "Modified_Time": "datetime"}
    return kinds | {"Created_By": "ownerlookup", "Modified_By": "ownerlookup"}


SCHEMAS = {module: _schema(module) for module in MANDATORY}


def zoho_time(ts: float) -> str:
    """Zoho datetimes carry an offset, e.g. 2020-10-14T10:31:43+05:30; the emulator's org is UTC."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def item_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    """A per-record error inside `data[]` (notes §2a, §5)."""
    return {"code": code, "details": details, "message": message, "status": "error"}


def field_error(code: str, message: str, index: int, api_name: str, **details: Any) -> dict[str, Any]:
    """A per-record error about one field: details carry api_name and json_path (OAS common.json)."""
    return item_error(code, message, api_name=api_name, json_path=f"$.data[{index}].{api_name}", **details)


@dataclass
class StoredRecord:
    id: str
    fields: dict[str, Any]
    created: float  # epoch seconds
    modified: float  # epoch seconds


@dataclass
class Change:
    """What one call did to one module, grouped by operation, for the notification channels (notes §3e)."""

    module: str
    operation: str  # insert | update | delete
    ids: list[str] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)  # record id -> changed field names
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # record id -> {field: new value}


class ChangeLog:
    """Collects per-record events of one call into at most one `Change` per operation, in order."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._by_op: dict[str, Change] = {}

    def add(self, operation: str, record_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        change = self._by_op.setdefault(operation, Change(self.module, operation))
        change.ids.append(record_id)
        if operation == "update":
            names = sorted(k for k in after.keys() | before.keys() if before.get(k) != after.get(k))
            change.affected[record_id] = names
            change.values[record_id] = {k: after.get(k) for k in names}
        elif operation == "insert":
            change.values[record_id] = dict(after)

    @property
    def changes(self) -> list[Change]:
        return list(self._by_op.values())


class RecordStore:
    """Accounts, Vendors and Contacts of one org. Callers hold `lock` while they read results."""

    def __init__(self, clock: Callable[[], float], lock: threading.RLock) -> None:
        self.clock = clock
        self.lock = lock
        # Unique custom fields per module, e.g. the NetSuite_Id the design upserts on (notes §2c).
        self.unique_fields: dict[str, set[str]] = {m: {"NetSuite_Id"} for m in MANDATORY}
        self._tables: dict[str, dict[str, StoredRecord]] = {m: {} for m in MANDATORY}
        self._next_id = ID_BASE
        # Duplicate-check lookups by (module, field): value → oldest record with it. An insert adds to the
        # index; any other change (update, patch, delete) drops the module's indexes, rebuilt on next use.
        # Without it every upsert scanned the module, and a 10,000-record backfill grew quadratically.
        self._indexes: dict[tuple[str, str], dict[Any, StoredRecord]] = {}

    def clear(self) -> None:
        with self.lock:
            self._tables = {m: {} for m in MANDATORY}
            self._next_id = ID_BASE
            self._indexes.clear()

    def _changed(self, module: str) -> None:
        for key in [k for k in self._indexes if k[0] == module]:
            del self._indexes[key]

    # Reads -----------------------------------------------------------------------------------
    def find(self, module: str, record_id: str) -> StoredRecord | None:
        with self.lock:
            return self._tables[module].get(record_id)

    def select(self, module: str, ids: list[str] | None) -> list[StoredRecord]:
        """Records with these ids in the order asked, unknown ids left out; every record if ids is None."""
        with self.lock:
            table = self._tables[module]
            return list(table.values()) if ids is None else [table[i] for i in ids if i in table]

    def flat(self, module: str) -> list[dict[str, Any]]:
        """Stored records as plain dicts: fields plus id, Created_Time, Modified_Time."""
        with self.lock:
            return [{"id": r.id, **r.fields, **_stamps(r)} for r in self._tables[module].values()]

    def duplicate_fields(self, module: str) -> list[str]:
        """Fields upsert may match on: the system field first, then the unique fields (notes §2c)."""
        return [SYSTEM_DUPLICATE_FIELD[module], *sorted(self.unique_fields.get(module, set()))]

    def render(self, module: str, stored: StoredRecord, fields: list[str] | None = None) -> dict[str, Any]:
        """A record as GET returns it: lookups as {name, id}, users as {name, id, email} (notes §2d)."""
        out: dict[str, Any] = dict(stored.fields)
        for name, target in LOOKUPS.get(module, {}).items():
            value = out.get(name)
            if isinstance(value, dict) and "id" in value:
                ref = self._tables[target].get(str(value["id"]))
                out[name] = {
                    "name": ref.fields.get(MANDATORY[target]) if ref else None,
                    "id": str(value["id"]),
                }
        if module == "Contacts":
            out["Full_Name"] = " ".join(str(out[f]) for f in ("First_Name", "Last_Name") if out.get(f))
        users = {role: dict(EMULATOR_USER) for role in ("Owner", "Created_By", "Modified_By")}
        out.update({"id": stored.id, **users, **_stamps(stored)})
        if fields:
            out = {k: v for k, v in out.items() if k in fields or k == "id"}
        return out

    # Writes through the API --------------------------------------------------------------------
    def insert(
        self, module: str, data: list[Any], *, upsert: bool = False, duplicate_check: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[Change]]:
        """Insert (or upsert) `data` in order; one result per input record (notes §2a, §2c)."""
        log, results = ChangeLog(module), []
        with self.lock:
            for index, record in enumerate(data):
                if not isinstance(record, dict):
                    results.append(_not_an_object(index))
                    continue
                existing, matched_on = None, None
                fields = _writable(record)
                if upsert:
                    existing, matched_on = self._match_any(module, fields, duplicate_check)
                result = self._apply(module, index, fields, existing, log)
                if upsert and result["status"] == "success":
                    result["action"] = "update" if existing else "insert"
                    result["duplicate_field"] = matched_on
                results.append(result)
        return results, log.changes

    def update(
        self, module: str, data: list[Any], *, path_id: str | None = None
    ) -> tuple[list[dict[str, Any]], list[Change]]:
        """Update records by the `id` each carries, or by the URL's id (notes §2b; OAS updateRecords)."""
        log, results = ChangeLog(module), []
        with self.lock:
            for index, record in enumerate(data):
                if not isinstance(record, dict):
                    results.append(_not_an_object(index))
                    continue
                record_id = path_id or (str(record["id"]) if record.get("id") not in (None, "") else None)
                existing = self._tables[module].get(record_id) if record_id else None
                if record_id is None:
                    message = "required field not found"
                    results.append(field_error("MANDATORY_NOT_FOUND", message, index, "id"))
                elif existing is None and path_id is not None:
                    # The single-record URL names the bad id itself (notes §2a: INVALID_DATA carries {id}).
                    message = "the id given seems to be invalid"
                    results.append(item_error("INVALID_DATA", message, id=record_id, resource_path_index=1))
                elif existing is None:
                    message = "the id given seems to be invalid"
                    results.append(field_error("INVALID_DATA", message, index, "id"))
                else:
                    results.append(self._apply(module, index, _writable(record), existing, log))
        return results, log.changes

    def delete(self, module: str, ids: Iterable[str]) -> tuple[list[dict[str, Any]], list[Change]]:
        """Delete by id: `record deleted`, or INVALID_DATA `record not deleted` (OAS example deleteRecords)."""
        log, results = ChangeLog(module), []
        with self.lock:
            table = self._tables[module]
            for record_id in ids:
                removed = table.pop(record_id, None)
                self._changed(module)
                if removed is None:
                    results.append(item_error("INVALID_DATA", "record not deleted", id=record_id))
                    continue
                log.add("delete", record_id, removed.fields, {})
                results.append(
                    {
                        "code": "SUCCESS",
                        "details": {"id": record_id},
                        "message": "record deleted",
                        "status": "success",
                    }
                )
        return results, log.changes

    # Writes from test hooks (no validation) -----------------------------------------------------
    def seed(self, module: str, record: dict[str, Any]) -> tuple[str, list[Change]]:
        log = ChangeLog(module)
        with self.lock:
            stored = self._insert(module, {k: v for k, v in record.items() if k != "id"})
            log.add("insert", stored.id, {}, stored.fields)
        return stored.id, log.changes

    def patch(self, module: str, record_id: str, fields: dict[str, Any]) -> list[Change]:
        """Change fields of a stored record as a person in the CRM would; KeyError if it does not exist."""
        log = ChangeLog(module)
        with self.lock:
            stored = self._tables[module][record_id]
            before = dict(stored.fields)
            stored.fields = {**stored.fields, **_writable(fields)}
            stored.modified = self.clock()
            self._changed(module)
            log.add("update", record_id, before, stored.fields)
        return log.changes

    # Internals -----------------------------------------------------------------------------------
    def _apply(
        self, module: str, index: int, fields: dict[str, Any], existing: StoredRecord | None, log: ChangeLog
    ) -> dict[str, Any]:
        before = dict(existing.fields) if existing else {}
        merged = {k: v for k, v in {**before, **fields}.items() if v is not None}
        problem = self._check(module, index, fields, merged, existing)
        if problem is not None:
            return problem
        if existing is not None:
            existing.fields, existing.modified = merged, self.clock()
            self._changed(module)
            stored = existing
        else:
            stored = self._insert(module, merged)
        log.add("update" if existing else "insert", stored.id, before, merged)
        message = "record updated" if existing else "record added"
        return {"code": "SUCCESS", "details": _details(stored), "message": message, "status": "success"}

    def _check(
        self,
        module: str,
        index: int,
        given: dict[str, Any],
        merged: dict[str, Any],
        existing: StoredRecord | None,
    ) -> dict[str, Any] | None:
        mandatory = MANDATORY[module]
        if merged.get(mandatory) in (None, ""):
            details = {"id": existing.id} if existing else {}
            return field_error("MANDATORY_NOT_FOUND", "required field not found", index, mandatory, **details)
        for name, value in given.items():
            problem = self._check_value(module, index, name, value)
            if problem is not None:
                return problem
        for name in sorted(self.unique_fields.get(module, set())):
            clash = self._match(module, name, merged.get(name))
            if clash is not None and clash is not existing:
                # OAS example createRecords/400-duplicatedataerror: the clashing record rides along.
                owner = {"name": EMULATOR_USER["name"], "id": EMULATOR_USER["id"], "zuid": "75092197"}
                duplicate = {
                    "Owner": owner,
                    "id": clash.id,
                    "module": {"api_name": module, "id": MODULE_IDS[module]},
                }
                return field_error(
                    "DUPLICATE_DATA",
                    "duplicate data",
                    index,
                    name,
                    duplicate_record=duplicate,
                    id=clash.id,
                    more_records=False,
                )
        return None

    def _check_value(self, module: str, index: int, name: str, value: Any) -> dict[str, Any] | None:
        """Type checks for the standard fields; custom fields other than the unique ones pass as given."""
        kind = SCHEMAS[module].get(name)
        if value is None or kind is None:
            return None
        invalid = "invalid data"
        if kind == "lookup":
            target = LOOKUPS[module][name]
            if not isinstance(value, dict) or str(value.get("id")) not in self._tables[target]:
                message = "the related id given seems to be invalid"
                return field_error("INVALID_DATA", message, index, name, expected_data_type="lookup")
        elif kind == "ownerlookup":
            if not isinstance(value, dict) or str(value.get("id")) != EMULATOR_USER["id"]:
                return field_error("INVALID_DATA", invalid, index, name, expected_data_type="ownerlookup")
        elif kind == "integer":
            if isinstance(value, bool) or not (isinstance(value, int) or str(value).isdigit()):
                return field_error("INVALID_DATA", invalid, index, name, expected_data_type="integer")
        elif kind == "currency":
            if isinstance(value, bool) or not _is_number(value):
                return field_error("INVALID_DATA", invalid, index, name, expected_data_type="double")
        elif kind == "date":
            if not isinstance(value, str) or not _is_date(value):
                return field_error("INVALID_DATA", invalid, index, name, expected_data_type="date")
        elif not isinstance(value, str):
            return field_error("INVALID_DATA", invalid, index, name, expected_data_type=kind)
        elif kind == "email" and not EMAIL_PATTERN.match(value):
            return field_error("INVALID_DATA", invalid, index, name, expected_data_type="email")
        elif len(value) > (TEXTAREA_LENGTH if kind == "textarea" else TEXT_LENGTH):
            limit = TEXTAREA_LENGTH if kind == "textarea" else TEXT_LENGTH
            return field_error("INVALID_DATA", invalid, index, name, maximum_length=limit)
        return None

    def _match_any(
        self, module: str, fields: dict[str, Any], duplicate_check: list[str] | None
    ) -> tuple[StoredRecord | None, str | None]:
        for name in duplicate_check or self.duplicate_fields(module):
            found = self._match(module, name, fields.get(name))
            if found is not None:
                return found, name
        return None, None

    def _match(self, module: str, name: str, value: Any) -> StoredRecord | None:
        # The oldest match wins when a non-unique system field (Account_Name) matches several records.
        if value in (None, ""):
            return None
        index = self._indexes.get((module, name))
        if index is None:
            index = {}
            for record in self._tables[module].values():  # oldest first: insertion order
                found = record.fields.get(name)
                if isinstance(found, Hashable):
                    index.setdefault(found, record)
            self._indexes[(module, name)] = index
        return index.get(value) if isinstance(value, Hashable) else None

    def _insert(self, module: str, fields: dict[str, Any]) -> StoredRecord:
        self._next_id += 1
        now = self.clock()
        stored = StoredRecord(str(self._next_id), fields, now, now)
        self._tables[module][stored.id] = stored
        for (indexed_module, name), index in self._indexes.items():
            found = fields.get(name)
            if indexed_module == module and isinstance(found, Hashable):
                index.setdefault(found, stored)
        return stored


def field_metadata(module: str, unique: set[str]) -> list[dict[str, Any]]:
    """`GET /settings/fields?module=` entries: the keys clients and the SDK read (OAS example getFields)."""
    out = []
    for position, (name, kind) in enumerate(SCHEMAS[module].items(), start=1):
        entry: dict[str, Any] = {
            "api_name": name,
            "field_label": name.replace("_", " "),
            "display_label": name.replace("_", " "),
            "id": str(int(MODULE_IDS[module]) * 1000 + position)[-19:],
            "data_type": kind,
            "json_type": _JSON_TYPES.get(kind, "string"),
            "system_mandatory": name == MANDATORY[module],
            "custom_field": name == "NetSuite_Id",
            "read_only": name in READ_ONLY,
            "field_read_only": name in READ_ONLY,
            "length": TEXTAREA_LENGTH if kind == "textarea" else TEXT_LENGTH,
            "unique": {"casesensitive": False} if name in unique else {},
            "pick_list_values": [],
            "lookup": {},
        }
        if kind == "lookup":
            target = LOOKUPS[module][name]
            entry["lookup"] = {"module": {"api_name": target, "id": MODULE_IDS[target]}}
        out.append(entry)
    return out


_JSON_TYPES = {
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
    "integer": "integer",
    "currency": "double",
}


def _writable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in READ_ONLY and not k.startswith("$")}


def _not_an_object(index: int) -> dict[str, Any]:
    return item_error(
        "INVALID_DATA", "invalid data", expected_data_type="jsonobject", json_path=f"$.data[{index}]"
    )


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _stamps(stored: StoredRecord) -> dict[str, str]:
    return {"Created_Time": zoho_time(stored.created), "Modified_Time": zoho_time(stored.modified)}


def _details(stored: StoredRecord) -> dict[str, Any]:
    """`details` of a successful write: id, times and who (notes §2a)."""
    user = {"name": EMULATOR_USER["name"], "id": EMULATOR_USER["id"]}
    return {**_stamps(stored), "Modified_By": user, "id": stored.id, "Created_By": user}
