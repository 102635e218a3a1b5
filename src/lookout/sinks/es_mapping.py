"""Index templates: typed fields, put in place before the first document is written.

Why a template and not dynamic mapping: Elasticsearch would map the seed's string values (and
even JSON numbers it first sees as strings) as `text` + `keyword`, and a `text` status cannot be
aggregated, ranged or charted. A composable template (`/_index_template`, ES >= 7.8 and every
OpenSearch) applies to the index when the first bulk creates it, and to every daily index.
"""

from __future__ import annotations

import re
from typing import Any

from lookout.schema import BY_COLUMN, RECORD_COLUMNS

# Elasticsearch type of each raw-record field (lookout.schema; ts sent as @timestamp), in batch order.
RECORD_TYPES: dict[str, str] = {BY_COLUMN[c].name: BY_COLUMN[c].es for c in RECORD_COLUMNS}
# ISO-8601 with milliseconds is what lookout sends; epoch_millis for documents written by others.
DATE_FORMAT = "strict_date_optional_time||epoch_millis"
TEMPLATE_PRIORITY = 200  # above the built-in logs-*/metrics-* templates (100), no tie with them


def _props(types: dict[str, str]) -> dict[str, Any]:
    return {f: ({"type": t, "format": DATE_FORMAT} if t == "date" else {"type": t}) for f, t in types.items()}


def records_template(index: str, daily: bool) -> dict[str, Any]:
    """Template for the raw records: `index` itself, or `index-*` with `index` as their alias
    (so `GET /<index>/_count` - the seed's check - answers across the daily indices)."""
    tpl: dict[str, Any] = {
        # dynamic false: a field lookout does not know is kept in _source but never re-types the index
        "mappings": {"dynamic": False, "properties": _props(RECORD_TYPES)},
    }
    if daily:
        tpl["aliases"] = {index: {}}
    return {
        "index_patterns": [f"{index}-*"] if daily else [index],
        "priority": TEMPLATE_PRIORITY,
        "template": tpl,
        "_meta": {"managed_by": "lookout", "kind": "records"},
    }


def results_template(index: str, group_by: list[str], value_field: str, is_count: bool) -> dict[str, Any]:
    """Template for one rule's results: the window, the group-by fields typed like the raw
    records, the aggregate, and @timestamp = window start (Kibana's time field)."""
    types = {"@timestamp": "date"}
    for f in group_by:
        types[f] = RECORD_TYPES.get(f, "keyword")
    types[value_field] = "long" if is_count else "double"
    props = _props(types)
    props["window"] = {
        "properties": {"start": {"type": "date", "format": DATE_FORMAT}, "end": {"type": "date", "format": DATE_FORMAT}}
    }
    return {
        "index_patterns": [index],
        "priority": TEMPLATE_PRIORITY,
        "template": {"mappings": {"properties": props}},
        "_meta": {"managed_by": "lookout", "kind": "results"},
    }


_BAD_INDEX_CHARS = re.compile(r'[\\/*?"<>| ,#:]+')


def index_name(name: str) -> str:
    """A valid index name: lowercase, none of \\ / * ? " < > | space , # :, not starting with - _ +."""
    s = _BAD_INDEX_CHARS.sub("-", name.lower()).lstrip("-_+.")
    if not s:
        raise ValueError(f"{name!r} gives an empty index name")
    return s[:255]


def record_properties(types: dict[str, str]) -> dict[str, Any]:
    """Mapping properties of the given field types."""
    return _props(types)


def missing_fields(mapping: dict[str, Any], types: dict[str, str]) -> list[str]:
    """Fields lookout maps that an existing index does not have (it predates them)."""
    props = mapping.get("properties", {})
    return [f for f in types if f not in props]


def mapping_conflicts(mapping: dict[str, Any], types: dict[str, str]) -> list[str]:
    """Fields whose type in an existing index differs from what lookout would map: such an index
    was created before the template (or by someone else) and keeps its types."""
    props = mapping.get("properties", {})
    out = []
    for f, t in types.items():
        have = props.get(f, {}).get("type")
        if have is not None and have != t:
            out.append(f"{f} is {have}, not {t}")
    return out
