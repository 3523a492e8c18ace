"""Reading many NetSuite records in one SuiteQL query instead of one record-API GET each.

A batch flow reading NetSuite customers (or vendors, contacts) needs, per record, only the fields its
mapping reads. When every one of those is a plain field SuiteQL returns in the same form as the record
API, one `SELECT … FROM customer WHERE id IN (…)` replaces up to a batch of GETs: one HTTP call instead
of a batch (200 for NetSuite → Zuora), which was most of what a record cost the runner (bench/overhead.py).

Which fields qualify is declared below per record type, not guessed: SuiteQL answers every value as text,
dates in the user's preferred format, booleans as 'T'/'F' and references as the internal id (the display
name through `BUILTIN.DF`), so only text fields, booleans and references read back exactly as the record
API gives them (notes /work/shared/api/netsuite.md: "SuiteQL", "BUILTIN.DF(col) gives a display
value"). A mapping that reads anything else (a number, a date, a custom field, an address, a sublist)
gets the per-record GET, as before.

The record built from a row carries only the fields the mapping reads, and says so: `SNAPSHOT_KEY` lists
the columns selected, so a later replay that re-maps this snapshot with a mapping reading more is refused
with what is missing (`unread`) instead of mapping what was never read: design.md invariant 4 keeps a
replay from re-reading the source unless the person asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.netsuite.client import NetSuiteClient

SNAPSHOT_KEY = "_suiteql"  # in a snapshot built from a SuiteQL row: the columns that were read
MAX_IDS = 1000  # expressions in one IN list (Oracle's limit, which SuiteQL inherits)
MAX_PAGE = 1000  # rows in one SuiteQL page (notes §4): a query of MAX_IDS ids answers in one page
BULK_MIN = 3  # records: fewer are read one GET each (no dearer, and the snapshot is the whole record)

_TEXT = frozenset(
    {
        "companyName",
        "entityId",
        "firstName",
        "middleName",
        "lastName",
        "salutation",
        "title",
        "email",
        "altEmail",
        "phone",
        "altPhone",
        "mobilePhone",
        "fax",
        "url",
        "comments",
        "externalId",
    }
)
_BOOLEANS = frozenset({"isPerson", "isInactive"})
_REFERENCES = frozenset({"currency", "subsidiary", "terms", "salesRep", "category", "parent", "company"})

# Per record type: field name (as the record API and the mappings spell it) → kind.
FIELDS: dict[str, dict[str, str]] = {
    record_type: {
        **{name: "text" for name in _TEXT},
        **{name: "boolean" for name in _BOOLEANS},
        **{name: "reference" for name in _REFERENCES},
    }
    for record_type in ("customer", "vendor", "contact")
}


@dataclass(frozen=True)
class Plan:
    """What to select for a mapping, and how each column goes back into a record."""

    record_type: str
    # (field, kind, part): part is "" for a text or boolean field, "id" or "refName" for a reference.
    reads: tuple[tuple[str, str, str], ...]

    @property
    def columns(self) -> list[str]:
        """The SuiteQL select list's column names (as the rows answer them: lower-case)."""
        return sorted({_column(field, part) for field, _kind, part in self.reads} | {"id"})

    def query(self, ids: list[str]) -> str:
        """`SELECT … FROM <type> WHERE id IN (…)`; `ids` are NetSuite internal ids (digits)."""
        if not ids or len(ids) > MAX_IDS:
            raise ValueError(f"between 1 and {MAX_IDS} ids, not {len(ids)}")
        wanted = ", ".join(str(int(record_id)) for record_id in ids)  # internal ids are integers
        select = ["id"]
        for field, _kind, part in sorted(set(self.reads)):
            expression = f"BUILTIN.DF({field.lower()})" if part == "refName" else field.lower()
            column = _column(field, part)
            item = expression if expression == column else f"{expression} AS {column}"
            if item not in select:
                select.append(item)
        return f"SELECT {', '.join(select)} FROM {self.record_type} WHERE id IN ({wanted})"

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """The record as the record API would show the fields read (null columns SuiteQL leaves out
        stay out, as empty fields do in the record API), tagged with the columns read."""
        record: dict[str, Any] = {"id": str(row.get("id"))}
        for field, kind, part in self.reads:
            value = row.get(_column(field, part))
            if value is None:
                continue
            if kind == "boolean":
                record[field] = value == "T" if value in ("T", "F") else bool(value)
            elif kind == "reference":
                record.setdefault(field, {})[part] = str(value)
            else:
                record[field] = value
        record[SNAPSHOT_KEY] = self.columns
        return record


def plan(spec: dict[str, Any], record_type: str) -> Plan | None:
    """The SuiteQL read that gives every field `spec` reads, or None when some field needs the record
    API (not a declared text/boolean/reference field, a nested path, a sublist, `each`)."""
    declared = FIELDS.get(record_type)
    if declared is None:
        return None
    known = {name.lower(): (name, kind) for name, kind in declared.items()}  # mappings match any case
    parts = {"id": "id", "refname": "refName"}
    reads: set[tuple[str, str, str]] = set()
    for rule in spec.get("fields") or []:
        if "each" in rule:
            return None
        for path in sources(rule):
            head, _, rest = path.lower().partition(".")
            if head == "id" and not rest:
                continue
            if head not in known:
                return None
            field, kind = known[head]
            if kind == "reference" and rest in parts:
                reads.add((field, kind, parts[rest]))
            elif kind != "reference" and not rest:
                reads.add((field, kind, ""))
            else:
                return None
    return Plan(record_type, tuple(sorted(reads)))


def unread(spec: dict[str, Any], record_type: str, snapshot: dict[str, Any]) -> list[str]:
    """What `spec` reads that `snapshot` never held: nothing for a record-API snapshot; for one built from
    SuiteQL, the columns `spec` needs beyond those it read (or every path SuiteQL cannot give)."""
    read = snapshot.get(SNAPSHOT_KEY)
    if read is None:
        return []
    wanted = plan(spec, record_type)
    if wanted is None:
        every = [path for rule in spec.get("fields") or [] for path in sources(rule)]
        return sorted({path for path in every if plan({"fields": [{"source": path}]}, record_type) is None})
    return sorted(set(wanted.columns) - set(read))


def sources(rule: dict[str, Any]) -> list[str]:
    """The source paths a mapping rule reads (its `source`, one path or a fallback list)."""
    source = rule.get("source")
    return [] if source is None else [source] if isinstance(source, str) else list(source)


def _column(field: str, part: str) -> str:
    return f"{field.lower()}_refname" if part == "refName" else field.lower()


async def fetch_many(
    netsuite: NetSuiteClient, record_type: str, spec: dict[str, Any], source_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The records of `source_ids` that one SuiteQL query can give for `spec`, by id: empty when the
    mapping needs the record API or the batch is too small to gain; ids the query does not return
    (deleted since, or not numeric) are left to the caller's per-record read, which reports them."""
    ids = sorted({source_id for source_id in source_ids if source_id.isdigit()}, key=int)
    reading = plan(spec, record_type) if len(ids) >= BULK_MIN else None
    if reading is None:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), MAX_IDS):
        query = reading.query(ids[start : start + MAX_IDS])
        async for row in netsuite.suiteql(query, limit=MAX_PAGE):
            record = reading.record(row)
            found[record["id"]] = record
    return found
