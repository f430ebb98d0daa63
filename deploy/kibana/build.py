#!/usr/bin/env python3
"""Generate deploy/kibana/c2scribe.ndjson: the Kibana 8 saved objects of c2scribe.

    python deploy/kibana/build.py            # rewrite c2scribe.ndjson next to this file
    python deploy/kibana/build.py --check    # exit 1 if the committed file is not current
    python deploy/kibana/build.py -          # print to stdout

Every field name comes from ``c2scribe.schema`` (looked up by record class and Python
attribute), except the few the Elasticsearch documents add to every record, listed in
``EXTRA_FIELDS``. Nothing here hand-types a schema field, so a renamed field fails here, and
``tests/test_deploy_elastic.py`` keeps the committed file equal to this script's output.

The objects are in Kibana's export format (one JSON object per line, keys sorted, then the
export summary line), at the migration versions of Kibana 8.17 to 8.19; Kibana migrates them
on import into any later 8.x or 9.x. The output is deterministic: no timestamps, fixed ids.

- data views ``c2scribe-c2``, ``c2scribe-http``, ``c2scribe-connection`` (``c2scribe-<dataset>-*``,
  time field ``@timestamp``);
- saved searches: C2 agent timeline, C2 commands, HTTP transactions;
- Lens visualizations: C2 agents over time, C2 commands per agent, top C2 hosts, top HTTP
  hosts, C2 command table;
- the dashboard ``c2scribe`` with those panels and the agent timeline as its transcript.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:                  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from c2scribe.schema import C2Message, Connection, HttpTransaction, fields_of  # noqa: E402

OUT = HERE / "c2scribe.ndjson"

#: Kibana's migration versions of each type, as Kibana 8.17-8.19 export them.
CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {
    "index-pattern": "8.0.0",
    "search": "10.5.0",
    "lens": "8.9.0",
    "dashboard": "10.2.0",
}

#: Fields every Elasticsearch document of c2scribe has besides the record's own schema
#: fields (c2scribe.ecs adds them): `message` is the record's transcript line(s), which for a
#: C2 message includes its text; `observer.name` is the sensor.
EXTRA_FIELDS = ("@timestamp", "message", "event.dataset", "event.module", "event.kind",
                "observer.name")

INDEX_PREFIX = "c2scribe"
TIME_FIELD = "@timestamp"


def field(cls: type, attr: str) -> str:
    """The external (document) name of a record class's field, from the schema."""
    for a, name, _type, _jsonl in fields_of(cls):
        if a == attr:
            return name
    raise KeyError(f"{cls.__name__} has no field {attr!r}")


_LENS_TYPES = {"str": "string", "strlist": "string", "ip": "ip", "int": "number",
               "bool": "boolean", "ts": "date"}


def lens_type(name: str) -> str:
    """Lens's data type of a field, from its schema type."""
    if name == TIME_FIELD:
        return "date"
    for cls in (C2Message, HttpTransaction, Connection):
        for _a, n, t, _j in fields_of(cls):
            if n == name:
                return _LENS_TYPES[t]
    return "string"


def extra(name: str) -> str:
    if name not in EXTRA_FIELDS:
        raise KeyError(f"{name!r} is not a documented extra field")
    return name


def short(cls: type) -> str:
    return cls.dataset.rsplit(".", 1)[-1]


def _json(obj) -> str:
    """JSON as Kibana stores nested JSON strings and export lines: compact, keys sorted."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _object(type_: str, id_: str, attributes: dict, references: list[dict]) -> dict:
    return {"attributes": attributes, "coreMigrationVersion": CORE_MIGRATION_VERSION,
            "id": id_, "managed": False, "references": references, "type": type_,
            "typeMigrationVersion": TYPE_MIGRATION_VERSION[type_]}


def kql_is(name: str, value: str) -> str:
    return f'{name} : "{value}"'


# ----------------------------------------------------------------------------- data views

def data_view_id(cls: type) -> str:
    return f"{INDEX_PREFIX}-{short(cls)}"


def data_view(cls: type, label: str) -> dict:
    return _object("index-pattern", data_view_id(cls), {
        "allowHidden": False,
        "fieldAttrs": "{}",
        "fieldFormatMap": "{}",
        "fields": "[]",                         # Kibana reads the fields from the mappings
        "name": label,
        "runtimeFieldMap": "{}",
        "sourceFilters": "[]",
        "timeFieldName": extra(TIME_FIELD),
        "title": f"{INDEX_PREFIX}-{short(cls)}-*",
    }, [])


# ------------------------------------------------------------------------- saved searches

_INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"


def saved_search(id_: str, cls: type, title: str, description: str, columns: list[str],
                 sort: list[list[str]], query: str = "") -> dict:
    source = {"filter": [], "indexRefName": _INDEX_REF,
              "query": {"language": "kuery", "query": query}}
    return _object("search", id_, {
        "columns": columns,
        "description": description,
        "grid": {},
        "hideChart": False,
        "isTextBasedQuery": False,
        "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)},
        "sort": sort,
        "timeRestore": False,
        "title": title,
    }, [{"id": data_view_id(cls), "name": _INDEX_REF, "type": "index-pattern"}])


# ---------------------------------------------------------------------------------- Lens

LAYER = "layer1"


def col_terms(name: str, size: int, order_by: str = "count") -> dict:
    return {"dataType": lens_type(name), "isBucketed": True,
            "label": f"Top {size} values of {name}",
            "operationType": "terms", "scale": "ordinal", "sourceField": name,
            "params": {"exclude": [], "excludeIsRegex": False, "include": [],
                       "includeIsRegex": False, "missingBucket": False,
                       "orderBy": {"columnId": order_by, "type": "column"},
                       "orderDirection": "desc", "otherBucket": True,
                       "parentFormat": {"id": "terms"}, "size": size}}


def col_date_histogram(name: str) -> dict:
    return {"dataType": "date", "isBucketed": True, "label": name,
            "operationType": "date_histogram", "scale": "interval", "sourceField": name,
            "params": {"dropPartials": False, "includeEmptyRows": True, "interval": "auto"}}


def col_count(label: str = "Messages") -> dict:
    return {"customLabel": True, "dataType": "number", "isBucketed": False, "label": label,
            "operationType": "count", "params": {"emptyAsNull": True}, "scale": "ratio",
            "sourceField": "___records___"}


def col_metric(op: str, name: str, label: str, data_type: str = "number") -> dict:
    return {"customLabel": True, "dataType": data_type, "isBucketed": False, "label": label,
            "operationType": op, "params": {"emptyAsNull": True}, "scale": "ratio",
            "sourceField": name}


def lens(id_: str, cls: type, title: str, description: str, vis_type: str,
         columns: dict[str, dict], visualization: dict, query: str = "") -> dict:
    layer = {"columnOrder": list(columns), "columns": columns, "incompleteColumns": {},
             "sampling": 1}
    state = {
        "adHocDataViews": {},
        "datasourceStates": {"formBased": {"layers": {LAYER: layer}},
                             "indexpattern": {"layers": {}}, "textBased": {"layers": {}}},
        "filters": [],
        "internalReferences": [],
        "query": {"language": "kuery", "query": query},
        "visualization": visualization,
    }
    return _object("lens", id_, {"description": description, "state": state, "title": title,
                                 "visualizationType": vis_type},
                   [{"id": data_view_id(cls), "name": f"indexpattern-datasource-layer-{LAYER}",
                     "type": "index-pattern"}])


def xy(series: str, x: str, accessors: list[str], split: str | None = None) -> dict:
    layer = {"accessors": accessors, "layerId": LAYER, "layerType": "data",
             "seriesType": series, "xAccessor": x}
    if split:
        layer["splitAccessor"] = split
    return {"fittingFunction": "None", "layers": [layer],
            "legend": {"isVisible": True, "position": "right"},
            "preferredSeriesType": series, "valueLabels": "hide"}


def table(columns: list[str]) -> dict:
    return {"columns": [{"columnId": c, "isTransposed": False} for c in columns],
            "layerId": LAYER, "layerType": "data"}


# --------------------------------------------------------------------------------- objects

def objects() -> list[dict]:
    """Every saved object, in dependency order (data views first, the dashboard last)."""
    agent = field(C2Message, "agent")
    direction = field(C2Message, "direction")
    kind = field(C2Message, "kind")
    command_id = field(C2Message, "command_id")
    family = field(C2Message, "family")
    c2_src, c2_dst = field(C2Message, "src_ip"), field(C2Message, "dst_ip")
    c2_dport = field(C2Message, "dst_port")
    ts, message, sensor = extra("@timestamp"), extra("message"), extra("observer.name")
    commands_only = kql_is(kind, "command")

    out = [
        data_view(C2Message, "c2scribe C2 messages"),
        data_view(HttpTransaction, "c2scribe HTTP transactions"),
        data_view(Connection, "c2scribe TCP connections"),

        saved_search(
            "c2scribe-c2-agent-timeline", C2Message, "C2 agent timeline",
            "Every C2 message in time order: check-ins, commands, outputs, files. Filter on "
            "one agent to read its timeline.",
            [agent, direction, kind, message, c2_src, c2_dst], [[ts, "asc"]]),
        saved_search(
            "c2scribe-c2-commands", C2Message, "C2 commands",
            "The commands operators sent to their implants, newest first.",
            [agent, command_id, message, c2_src, c2_dst, sensor], [[ts, "desc"]],
            query=commands_only),
        saved_search(
            "c2scribe-http-transactions", HttpTransaction, "HTTP transactions",
            "Every HTTP request/response exchange, newest first.",
            [field(HttpTransaction, "src_ip"), field(HttpTransaction, "dst_ip"),
             field(HttpTransaction, "method"), field(HttpTransaction, "hostname"),
             field(HttpTransaction, "uri"), field(HttpTransaction, "status_code"),
             field(HttpTransaction, "user_agent"), sensor],
            [[ts, "desc"]]),

        lens("c2scribe-c2-agents-over-time", C2Message, "C2 agents over time",
             "C2 messages per interval, one colour per agent.", "lnsXY",
             {"x": col_date_histogram(ts), "agent": col_terms(agent, 10),
              "count": col_count()},
             xy("bar_stacked", "x", ["count"], split="agent")),
        lens("c2scribe-c2-commands-per-agent", C2Message, "C2 commands per agent",
             "How many commands each agent received.", "lnsXY",
             {"agent": col_terms(agent, 20), "count": col_count("Commands")},
             xy("bar_horizontal", "agent", ["count"]), query=commands_only),
        lens("c2scribe-c2-top-hosts", C2Message, "Top C2 hosts",
             "The C2 servers (destination of the implants' connections): messages and agents.",
             "lnsDatatable",
             {"dst": col_terms(c2_dst, 20), "port": col_terms(c2_dport, 5),
              "family": col_terms(family, 3), "count": col_count(),
              "agents": col_metric("unique_count", agent, "Agents")},
             table(["dst", "port", "family", "count", "agents"])),
        lens("c2scribe-http-top-hosts", HttpTransaction, "Top HTTP hosts",
             "HTTP transactions per host name (url.domain).", "lnsXY",
             {"host": col_terms(field(HttpTransaction, "hostname"), 15),
              "count": col_count("Transactions")},
             xy("bar_horizontal", "host", ["count"])),
        lens("c2scribe-c2-command-table", C2Message, "C2 command table",
             "One row per agent, command and kind of message, with first and last time: the "
             "outline of each agent's transcript (the text is in the C2 agent timeline).",
             "lnsDatatable",
             {"agent": col_terms(agent, 50), "command": col_terms(command_id, 200),
              "kind": col_terms(kind, 7), "first": col_metric("min", ts, "First", "date"),
              "last": col_metric("max", ts, "Last", "date"), "count": col_count()},
             table(["agent", "command", "kind", "first", "last", "count"])),
    ]

    panels = [("lens", "c2scribe-c2-agents-over-time", 0, 0, 32, 13),
              ("lens", "c2scribe-c2-commands-per-agent", 32, 0, 16, 13),
              ("lens", "c2scribe-c2-top-hosts", 0, 13, 24, 13),
              ("lens", "c2scribe-http-top-hosts", 24, 13, 24, 13),
              ("lens", "c2scribe-c2-command-table", 0, 26, 48, 14),
              ("search", "c2scribe-c2-agent-timeline", 0, 40, 48, 20)]
    panels_json, refs = [], []
    for n, (type_, id_, x, y, w, h) in enumerate(panels, 1):
        p = f"p{n}"
        config: dict = {"enhancements": {}}
        if id_ == "c2scribe-c2-agent-timeline":
            config["title"] = "C2 transcript (agent timeline)"
        panels_json.append({"embeddableConfig": config,
                            "gridData": {"h": h, "i": p, "w": w, "x": x, "y": y},
                            "panelIndex": p, "panelRefName": f"panel_{p}", "type": type_})
        refs.append({"id": id_, "name": f"{p}:panel_{p}", "type": type_})
    out.append(_object("dashboard", "c2scribe", {
        "description": "c2scribe: C2 agents, their commands and C2 hosts, and the transcript.",
        "kibanaSavedObjectMeta": {"searchSourceJSON": _json(
            {"filter": [], "query": {"language": "kuery", "query": ""}})},
        "optionsJSON": _json({"hidePanelTitles": False, "syncColors": False,
                              "syncCursor": True, "syncTooltips": False, "useMargins": True}),
        "panelsJSON": _json(panels_json),
        "refreshInterval": {"pause": True, "value": 60000},
        "timeFrom": "now-30d",
        "timeRestore": True,
        "timeTo": "now",
        "title": "c2scribe",
    }, refs))
    return out


def render() -> str:
    """The NDJSON text: one object per line, then Kibana's export summary line."""
    objs = objects()
    summary = {"excludedObjects": [], "excludedObjectsCount": 0, "exportedCount": len(objs),
               "missingRefCount": 0, "missingReferences": []}
    return "".join(_json(o) + "\n" for o in objs) + _json(summary) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(OUT), help="output file, '-' for stdout")
    ap.add_argument("--check", action="store_true",
                    help="compare with the file instead of writing it (exit 1 if different)")
    a = ap.parse_args(argv)
    text = render()
    if a.out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(a.out)
    if a.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(f"{path} is not current: run python deploy/kibana/build.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text.splitlines()) - 1} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
