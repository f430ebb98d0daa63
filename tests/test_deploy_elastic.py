"""deploy/elastic, deploy/kibana and deploy/schedule: what can be checked without Docker,
Elasticsearch, Kibana, systemd, Kubernetes or Airflow.

- the Kibana saved objects equal what deploy/kibana/build.py generates from the schema; every
  line parses; every field they name exists in the schema (or is one of the documented extra
  fields the Elasticsearch documents add), in the right dataset, and, where Lens aggregates
  it, is aggregatable in the index mappings; every reference resolves;
- compose.yaml and cronjob.yaml parse as YAML with the expected keys; the systemd units have
  their sections; the cron line runs `c2scribe backfill` under flock; the Airflow DAG
  compiles and has max_active_runs=1;
- c2scribe.kibana.kibana_import against an in-process fake of Kibana's saved objects import
  API: the multipart body, kbn-xsrf, the Authorization header, spaces, 401/403/404, per-object
  errors, an unreachable or silent Kibana, and credentials never printed.
"""
from __future__ import annotations

import ast
import base64
import configparser
import email.parser
import email.policy
import importlib.util
import json
import py_compile
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from c2scribe import kibana
from c2scribe.schema import C2Message, Connection, HttpTransaction, RECORD_TYPES, fields_of

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
NDJSON = DEPLOY / "kibana" / "c2scribe.ndjson"


def _load_build():
    spec = importlib.util.spec_from_file_location("c2scribe_kibana_build",
                                                  DEPLOY / "kibana" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()


def _lines() -> list[dict]:
    return [json.loads(line) for line in NDJSON.read_text(encoding="utf-8").splitlines()]


def _objects() -> list[dict]:
    return [o for o in _lines() if "exportedCount" not in o]


def _by_type(type_: str) -> list[dict]:
    return [o for o in _objects() if o["type"] == type_]


# ------------------------------------------------------------------------ the saved objects

def test_ndjson_is_the_generators_output():
    assert NDJSON.read_text(encoding="utf-8") == build.render(), \
        "deploy/kibana/c2scribe.ndjson is stale: run python deploy/kibana/build.py"
    assert build.main([str(NDJSON), "--check"]) == 0


def test_every_line_parses_in_export_format():
    text = NDJSON.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\n\n" not in text
    lines = _lines()
    summary = lines[-1]
    objs = lines[:-1]
    assert summary == {"excludedObjects": [], "excludedObjectsCount": 0,
                       "exportedCount": len(objs), "missingRefCount": 0,
                       "missingReferences": []}
    seen = set()
    for o in objs:
        assert set(o) == {"attributes", "coreMigrationVersion", "id", "managed", "references",
                          "type", "typeMigrationVersion"}, o["id"]
        assert (o["type"], o["id"]) not in seen
        seen.add((o["type"], o["id"]))
        assert o["coreMigrationVersion"] == "8.8.0"
        assert re.fullmatch(r"(8|10)\.\d+\.\d+", o["typeMigrationVersion"])
        assert o["attributes"]["title"]
        # nested JSON strings are JSON
        for key in ("panelsJSON", "optionsJSON", "fieldAttrs", "fieldFormatMap", "fields",
                    "runtimeFieldMap", "sourceFilters"):
            if key in o["attributes"]:
                json.loads(o["attributes"][key])
        meta = o["attributes"].get("kibanaSavedObjectMeta")
        if meta:
            json.loads(meta["searchSourceJSON"])
    # keys sorted, compact: as Kibana exports and as the generator writes
    for line in text.splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
    types = [o["type"] for o in objs]
    assert types.count("index-pattern") == 3 and types.count("search") == 3
    assert types.count("lens") >= 4 and types.count("dashboard") == 1


def test_data_views():
    dvs = {o["id"]: o["attributes"] for o in _by_type("index-pattern")}
    assert set(dvs) == {"c2scribe-c2", "c2scribe-http", "c2scribe-connection"}
    for id_, a in dvs.items():
        assert a["title"] == f"{id_}-*"
        assert a["timeFieldName"] == "@timestamp"
    # the names the indexer gives its indices: c2scribe-<dataset>-YYYY.MM
    shorts = {c.dataset.rsplit(".", 1)[-1] for c in RECORD_TYPES}
    assert {"c2", "http", "connection"} <= shorts
    try:
        from c2scribe import ecs
    except ImportError:
        return
    for cls in (C2Message, HttpTransaction, Connection):
        index = ecs.index_name(cls.dataset, 1_700_000_000_000_000)
        pattern = dvs[build.data_view_id(cls)]["title"]
        assert re.fullmatch(pattern.replace("*", ".*"), index), (pattern, index)


def test_saved_searches():
    searches = {o["attributes"]["title"]: o for o in _by_type("search")}
    assert set(searches) == {"C2 agent timeline", "C2 commands", "HTTP transactions"}
    tl = searches["C2 agent timeline"]["attributes"]
    assert tl["sort"] == [["@timestamp", "asc"]]
    assert tl["columns"] == ["c2scribe.c2.agent", "c2scribe.c2.direction", "c2scribe.c2.kind",
                             "message", "source.ip", "destination.ip"]
    cmd = json.loads(searches["C2 commands"]["attributes"]["kibanaSavedObjectMeta"]
                     ["searchSourceJSON"])
    assert cmd["query"] == {"language": "kuery", "query": 'c2scribe.c2.kind : "command"'}
    from c2scribe.decoders.api import KINDS
    assert "command" in KINDS


def _kql_fields(query: str) -> set[str]:
    return set(re.findall(r"([A-Za-z0-9_@.]+)\s*:", query))


def _referenced_fields() -> dict[str, set[str]]:
    """data view id -> every field the objects built on it name."""
    out: dict[str, set[str]] = {}
    for o in _objects():
        a = o["attributes"]
        if o["type"] == "index-pattern":
            out.setdefault(o["id"], set()).add(a["timeFieldName"])
        elif o["type"] == "search":
            dv = o["references"][0]["id"]
            src = json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])
            out.setdefault(dv, set()).update(a["columns"], (s[0] for s in a["sort"]),
                                             _kql_fields(src["query"]["query"]))
        elif o["type"] == "lens":
            dv = o["references"][0]["id"]
            fs = out.setdefault(dv, set())
            fs.update(_kql_fields(a["state"]["query"]["query"]))
            for layer in a["state"]["datasourceStates"]["formBased"]["layers"].values():
                for col in layer["columns"].values():
                    if col["sourceField"] != "___records___":
                        fs.add(col["sourceField"])
    return out


def test_every_field_exists_in_the_schema():
    classes = {build.data_view_id(c): c for c in (C2Message, HttpTransaction, Connection)}
    extras = set(build.EXTRA_FIELDS)
    refs = _referenced_fields()
    assert refs, "no field found"
    for dv, fields in refs.items():
        own = {name for _a, name, _t, _j in fields_of(classes[dv])}
        unknown = fields - own - extras
        assert not unknown, f"{dv}: fields not in the schema of {classes[dv].__name__}: " \
                            f"{sorted(unknown)}"
    # the extras are the ones the documents have: docs/schema.md names @timestamp and
    # event.dataset; the indexer (c2scribe.ecs) adds the others
    schema_md = (REPO / "docs" / "schema.md").read_text(encoding="utf-8")
    assert "`@timestamp`" in schema_md and "`event.dataset`" in schema_md
    try:
        from c2scribe import ecs
    except ImportError:
        pytest.skip("c2scribe.ecs (the Elasticsearch documents) is not there yet")
    assert extras <= {name for name, _t in ecs.EXTRA_FIELDS}


def test_lens_fields_are_aggregatable_in_the_index_mappings():
    ecs = pytest.importorskip("c2scribe.ecs")
    mapped = ecs.all_fields()                  # name -> schema-style type
    aggregatable = {"str", "strlist", "int", "ip", "ts", "bool"}
    for o in _by_type("lens"):
        for layer in o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"] \
                .values():
            for col in layer["columns"].values():
                f = col["sourceField"]
                if f == "___records___":
                    continue
                assert f in mapped, f"{o['id']}: {f} is not in the index mappings"
                assert mapped[f] in aggregatable, \
                    f"{o['id']}: {f} ({mapped[f]}) cannot be aggregated"
                if mapped[f] == "ts":
                    assert col["dataType"] == "date"
    # the columns of the saved searches exist in the documents
    for o in _by_type("search"):
        for c in o["attributes"]["columns"]:
            assert c in mapped, c


def test_references_resolve():
    objs = _objects()
    ids = {(o["type"], o["id"]) for o in objs}
    for o in objs:
        for r in o["references"]:
            assert (r["type"], r["id"]) in ids, f"{o['id']}: dangling reference {r}"
        names = [r["name"] for r in o["references"]]
        assert len(names) == len(set(names)), o["id"]
        a = o["attributes"]
        if o["type"] == "search":
            src = json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert src["indexRefName"] in names
        if o["type"] == "lens":
            layers = a["state"]["datasourceStates"]["formBased"]["layers"]
            for lid, layer in layers.items():
                assert f"indexpattern-datasource-layer-{lid}" in names
                assert sorted(layer["columnOrder"]) == sorted(layer["columns"])
                for col in layer["columns"].values():
                    order = col.get("params", {}).get("orderBy", {})
                    if order.get("type") == "column":
                        assert order["columnId"] in layer["columns"]
            vis = a["state"]["visualization"]
            cols = set().union(*(set(layer["columns"]) for layer in layers.values()))
            if a["visualizationType"] == "lnsXY":
                for vl in vis["layers"]:
                    assert vl["layerId"] in layers
                    used = {vl["xAccessor"], *vl["accessors"], vl.get("splitAccessor")} - {None}
                    assert used <= cols, (o["id"], used - cols)
            elif a["visualizationType"] == "lnsDatatable":
                assert vis["layerId"] in layers
                assert [c["columnId"] for c in vis["columns"]] == \
                    layers[vis["layerId"]]["columnOrder"]
            else:
                raise AssertionError(a["visualizationType"])
    dash = _by_type("dashboard")[0]
    assert dash["id"] == "c2scribe"
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    assert len(panels) == len(refs)
    for p in panels:
        r = refs[f"{p['panelIndex']}:{p['panelRefName']}"]
        assert r["type"] == p["type"]
        g = p["gridData"]
        assert g["i"] == p["panelIndex"] and 0 <= g["x"] and g["x"] + g["w"] <= 48
    titles = {o["id"]: o["attributes"]["title"] for o in objs}
    on_dashboard = {titles[r["id"]] for r in dash["references"]}
    assert {"C2 agents over time", "C2 commands per agent", "Top C2 hosts",
            "C2 command table", "C2 agent timeline"} <= on_dashboard


# ------------------------------------------------------------------------------- compose

def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "elastic" / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_file():
    c = _compose()
    svc = c["services"]
    assert {"setup", "es01", "kibana"} <= set(svc)
    assert set(c["volumes"]) >= {"certs", "esdata", "kibanadata"}
    es, kb = svc["es01"], svc["kibana"]
    for s in (es, kb):                          # one version for both
        assert re.fullmatch(r"\$\{[A-Z_]+:-(elasticsearch|kibana)\}:\$\{STACK_VERSION[^}]*\}",
                            s["image"]), s["image"]
    env = es["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "true"
    assert env["xpack.security.http.ssl.enabled"] == "true"
    assert "-Xmx" in env["ES_JAVA_OPTS"]
    for s in (es, kb):
        assert s["healthcheck"]["test"][0] == "CMD-SHELL"
        assert "mem_limit" in s
        for port in s["ports"]:                 # localhost only
            assert port.startswith("127.0.0.1:"), port
        assert any(v.startswith("certs:") and v.endswith(":ro") for v in s["volumes"])
    assert any(v.startswith("esdata:") for v in es["volumes"])
    assert any(v.startswith("kibanadata:") for v in kb["volumes"])
    assert kb["depends_on"]["es01"]["condition"] == "service_healthy"
    assert kb["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert es["depends_on"]["setup"]["condition"] == "service_healthy"
    assert kb["environment"]["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert kb["environment"]["ELASTICSEARCH_HOSTS"].startswith('["https://es01:9200"')
    # every variable compose needs is in .env.example
    text = (DEPLOY / "elastic" / "compose.yaml").read_text(encoding="utf-8")
    needed = set(re.findall(r"\$\{([A-Z_]+)(?::?[-?][^}]*)?\}", text))
    example = (DEPLOY / "elastic" / ".env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^#?([A-Z_]+)=", example, re.M))
    assert needed <= defined, needed - defined
    assert re.search(r"^STACK_VERSION=8\.\d+\.\d+$", example, re.M)
    for secret in ("ELASTIC_PASSWORD", "KIBANA_PASSWORD", "KIBANA_ENCRYPTION_KEY"):
        assert re.search(rf"^{secret}=$", example, re.M), f"{secret} must ship empty"


# ------------------------------------------------------------------------------ schedules

def test_cronjob_yaml():
    cj = yaml.safe_load((DEPLOY / "schedule" / "kubernetes" / "cronjob.yaml")
                        .read_text(encoding="utf-8"))
    assert cj["apiVersion"] == "batch/v1" and cj["kind"] == "CronJob"
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (ctr,) = pod["containers"]
    assert ctr["command"] == ["c2scribe"] and ctr["args"][0] == "backfill"
    assert "--input" in ctr["args"] and "--output" in ctr["args"]
    assert any("secretRef" in e for e in ctr["envFrom"])
    assert ctr["resources"]["requests"]["cpu"] and ctr["resources"]["limits"]["memory"]
    workers = ctr["args"][ctr["args"].index("--workers") + 1]
    assert workers == str(ctr["resources"]["requests"]["cpu"])
    mounts = {m["name"] for m in ctr["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["volumes"]}
    env = {e["name"] for e in ctr["env"]}
    assert {"C2SCRIBE_INPUT", "C2SCRIBE_OUTPUT"} <= env
    assert not any("API_KEY" in e or "PASSWORD" in e for e in env), "secrets belong in the Secret"


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str
    cp.read_string((DEPLOY / "schedule" / "systemd" / name).read_text(encoding="utf-8"))
    return cp


def test_systemd_units():
    svc = _unit("c2scribe-backfill.service")
    assert {"Unit", "Service"} <= set(svc.sections())
    s = svc["Service"]
    assert s["Type"] == "oneshot"
    assert re.search(r"/c2scribe backfill .*--input \$C2SCRIBE_INPUT --output "
                     r"\$\{C2SCRIBE_OUTPUT\}", s["ExecStart"])
    assert s["EnvironmentFile"].startswith("/etc/")
    assert s["User"] and s["User"] != "root"
    timer = _unit("c2scribe-backfill.timer")
    assert {"Unit", "Timer", "Install"} <= set(timer.sections())
    assert timer["Timer"]["Unit"] == "c2scribe-backfill.service"
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_cron_line():
    lines = [ln for ln in (DEPLOY / "schedule" / "cron" / "c2scribe-backfill.cron")
             .read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    f = lines[0].split(None, 6)
    assert len(f) == 7
    minute, hour, dom, month, dow, user, command = f
    assert re.fullmatch(r"[0-9*/,-]+", minute) and user == "c2scribe"
    assert command.startswith("flock -n ")
    assert "c2scribe backfill" in command and "--input $C2SCRIBE_INPUT" in command
    assert "%" not in command                   # cron turns % into newlines


def test_airflow_dag_compiles(tmp_path):
    path = DEPLOY / "schedule" / "airflow" / "c2scribe_backfill_dag.py"
    py_compile.compile(str(path), doraise=True, cfile=str(tmp_path / "dag.pyc"))
    text = path.read_text(encoding="utf-8")
    assert "max_active_runs=1" in text
    tree = ast.parse(text)
    dag_kw = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DAG":
            dag_kw = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(dag_kw["max_active_runs"]) == 1
    assert ast.literal_eval(dag_kw["catchup"]) is False
    assert "c2scribe" in text and "backfill --progress never" in text


# ---------------------------------------------------------------------- fake Kibana import

class FakeKibana:
    """Kibana's saved objects import endpoint, enough of it: multipart parsing, kbn-xsrf,
    API key / basic auth, spaces, overwrite, references checked like Kibana does."""

    def __init__(self, *, api_keys=(), users=None, spaces=("default",), status=None,
                 known_types=("index-pattern", "search", "lens", "dashboard"), tls=None):
        self.api_keys = set(api_keys)
        self.users = dict(users or {})
        self.spaces = set(spaces)
        self.status = status
        self.known_types = set(known_types)
        self.requests: list[dict] = []
        self.stored: dict[tuple[str, str, str], dict] = {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                code, answer = outer.handle(self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _error(code: int, error: str, message: str):
        return code, {"statusCode": code, "error": error, "message": message}

    def handle(self, path: str, headers: dict, body: bytes):
        h = {k.lower(): v for k, v in headers.items()}
        url = urllib.parse.urlsplit(path)
        self.requests.append({"path": url.path, "query": urllib.parse.parse_qs(url.query),
                              "headers": h, "body": body})
        if self.status:
            return self._error(self.status, "Error", "forced")
        auth = h.get("authorization", "")
        if self.api_keys or self.users:
            ok = False
            if auth.startswith("ApiKey "):
                ok = auth[7:] in self.api_keys
            elif auth.startswith("Basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = self.users.get(user) == pw
            if not ok:
                return self._error(401, "Unauthorized", "[security_exception]: unable to "
                                   "authenticate user")
        m = re.fullmatch(r"(?:/s/([a-z0-9_-]+))?/api/saved_objects/_import", url.path)
        if not m:
            return self._error(404, "Not Found", "Not Found")
        space = m.group(1) or "default"
        if space not in self.spaces:
            return self._error(404, "Not Found", "Not Found")
        if "kbn-xsrf" not in h:
            return self._error(400, "Bad Request", "Request must contain a kbn-xsrf header.")
        ctype = h.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(415, "Unsupported Media Type", ctype)
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        if not msg.is_multipart():
            return self._error(400, "Bad Request", "not multipart")
        parts = list(msg.iter_parts())
        files = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
        if len(files) != 1:
            return self._error(400, "Bad Request", "[request body.file]: expected value of "
                               "type [Stream] but got [undefined]")
        part = files[0]
        if not (part.get_filename() or "").endswith(".ndjson"):
            return self._error(400, "Bad Request", "Invalid file extension .txt")
        content = part.get_payload(decode=True)
        objs = [json.loads(ln) for ln in content.decode().splitlines() if ln.strip()]
        objs = [o for o in objs if "exportedCount" not in o]
        overwrite = self.requests[-1]["query"].get("overwrite") == ["true"]
        present = {(o["type"], o["id"]) for o in objs} | \
            {(t, i) for (s, t, i) in self.stored if s == space}
        errors, results = [], []
        for o in objs:
            meta = {"title": o["attributes"].get("title")}
            base = {"id": o["id"], "type": o["type"], "title": meta["title"], "meta": meta}
            if o["type"] not in self.known_types:
                errors.append({**base, "error": {"type": "unsupported_type"}})
                continue
            missing = [{"type": r["type"], "id": r["id"]} for r in o["references"]
                       if (r["type"], r["id"]) not in present]
            if missing:
                errors.append({**base, "error": {"type": "missing_references",
                                                 "references": missing}})
                continue
            if (space, o["type"], o["id"]) in self.stored and not overwrite:
                errors.append({**base, "error": {"type": "conflict"}})
                continue
            self.stored[(space, o["type"], o["id"])] = o
            results.append({"id": o["id"], "type": o["type"], "meta": meta,
                            **({"overwrite": True} if overwrite else {})})
        answer = {"success": not errors, "successCount": len(results),
                  "successResults": results}
        if errors:
            answer["errors"] = errors
        return 200, answer


ENCODED = base64.b64encode(b"keyid:keysecret").decode()


def test_import_with_api_key_multipart_and_xsrf():
    with FakeKibana(api_keys=[ENCODED]) as kb:
        answer = kibana.kibana_import(kb.url, NDJSON, api_key=ENCODED)
        assert answer["success"] is True
        assert answer["successCount"] == len(_objects())
        (req,) = kb.requests
        assert req["path"] == "/api/saved_objects/_import"
        assert req["query"] == {"overwrite": ["true"]}
        assert req["headers"]["kbn-xsrf"]
        assert req["headers"]["authorization"] == f"ApiKey {ENCODED}"
        # the multipart body: one well-formed part, the file byte for byte
        ctype = req["headers"]["content-type"]
        boundary = re.search(r"boundary=(\S+)", ctype).group(1)
        assert req["body"].startswith(f"--{boundary}\r\n".encode())
        assert req["body"].endswith(f"\r\n--{boundary}--\r\n".encode())
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req["body"])
        (part,) = list(msg.iter_parts())
        assert part.get_param("name", header="content-disposition") == "file"
        assert part.get_filename() == "c2scribe.ndjson"
        assert part.get_payload(decode=True) == NDJSON.read_bytes()
        assert len(kb.stored) == len(_objects())
        # ID:KEY is encoded the way Elasticsearch encodes API keys
        kibana.kibana_import(kb.url, NDJSON, api_key="keyid:keysecret")
        assert kb.requests[-1]["headers"]["authorization"] == f"ApiKey {ENCODED}"
        # a second import overwrites
        again = kibana.kibana_import(kb.url, NDJSON, api_key=ENCODED)
        assert again["success"] and all(r.get("overwrite") for r in again["successResults"])


def test_import_basic_auth_space_and_url_credentials():
    with FakeKibana(users={"elastic": "pw:with colon"}, spaces=("default", "soc")) as kb:
        kibana.kibana_import(kb.url, NDJSON, user="elastic", password="pw:with colon",
                             space="soc")
        req = kb.requests[-1]
        assert req["path"] == "/s/soc/api/saved_objects/_import"
        assert req["headers"]["authorization"] == "Basic " + base64.b64encode(
            b"elastic:pw:with colon").decode()
        assert {k[0] for k in kb.stored} == {"soc"}
        # user and password in the URL become basic auth, and leave the URL
        url = kb.url.replace("http://", "http://elastic:pw%3Awith%20colon@")
        kibana.kibana_import(url, NDJSON)
        assert kb.requests[-1]["headers"]["authorization"] == req["headers"]["authorization"]
        # no overwrite: existing objects conflict
        with pytest.raises(kibana.KibanaImportError) as ei:
            kibana.kibana_import(kb.url, NDJSON, user="elastic", password="pw:with colon",
                                 space="soc", overwrite=False)
        assert "overwrite" not in kb.requests[-1]["query"]
        assert "conflict" in str(ei.value)


def test_401_is_clear_and_secrets_are_never_printed(capsys):
    secret = "s3cr3t-Never-Shown"
    with FakeKibana(api_keys=[ENCODED], users={"elastic": "pw-R1ght-xyz"}) as kb:
        with pytest.raises(kibana.KibanaError) as ei:
            kibana.kibana_import(kb.url, NDJSON, api_key=secret)
        assert "401" in str(ei.value) and "API key" in str(ei.value)
        assert secret not in str(ei.value)
        with pytest.raises(kibana.KibanaError, match="without credentials"):
            kibana.kibana_import(kb.url, NDJSON)
        env = {"C2SCRIBE_KIBANA_URL": kb.url.replace("http://", f"http://elastic:{secret}@"),
               "C2SCRIBE_KIBANA_API_KEY": ""}
        assert kibana.main(["--file", str(NDJSON)], environ=env) == kibana.EXIT_FAILED
        assert kibana.main(["--file", str(NDJSON), "--kibana-url", kb.url],
                           environ={"C2SCRIBE_KIBANA_API_KEY": secret}) == kibana.EXIT_FAILED
        ok = kibana.main(["--kibana-url", kb.url],
                         environ={"C2SCRIBE_KIBANA_USER": "elastic",
                                  "C2SCRIBE_KIBANA_PASSWORD": "pw-R1ght-xyz"})
        assert ok == kibana.EXIT_OK
    out, err = capsys.readouterr()
    assert secret not in out + err and "pw-R1ght-xyz" not in out + err
    assert "401" in err
    assert f"imported {len(_objects())} saved objects" in out
    assert "/app/dashboards#/view/c2scribe" in out


def test_403_404_and_other_statuses():
    with FakeKibana(status=403) as kb:
        with pytest.raises(kibana.KibanaError, match="403"):
            kibana.kibana_import(kb.url, NDJSON)
    with FakeKibana(spaces=("default",)) as kb:
        with pytest.raises(kibana.KibanaError, match="no space 'nope'"):
            kibana.kibana_import(kb.url, NDJSON, space="nope")
    with FakeKibana(status=500) as kb:
        with pytest.raises(kibana.KibanaError, match="500.*forced"):
            kibana.kibana_import(kb.url, NDJSON)


def test_per_object_errors_are_reported(tmp_path, capsys):
    objs = _objects()
    broken = [o for o in objs if o["type"] != "index-pattern"]     # data views left out
    path = tmp_path / "partial.json"            # sent as partial.ndjson, as Kibana wants
    path.write_text("".join(json.dumps(o) + "\n" for o in broken), encoding="utf-8")
    with FakeKibana(known_types=("index-pattern", "search", "dashboard")) as kb:
        with pytest.raises(kibana.KibanaImportError) as ei:
            kibana.kibana_import(kb.url, path)
        resp = ei.value.response
        assert resp["success"] is False and resp["errors"]
        msg = str(ei.value)
        assert "search c2scribe-c2-agent-timeline (C2 agent timeline): missing_references: " \
               "index-pattern c2scribe-c2" in msg
        assert "lens c2scribe-c2-agents-over-time" in msg and "unsupported_type" in msg
        got = kibana.kibana_import(kb.url, path, raise_on_errors=False)
        assert got["errors"] and got["success"] is False
        assert kibana.main(["--kibana-url", kb.url, "--file", str(path)], environ={}) == 1
    err = capsys.readouterr().err
    assert "missing_references" in err and "failed" in err


def test_unreachable_and_silent_kibana_fail_fast():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(kibana.KibanaError, match=r"cannot reach Kibana at http://127\.0\.0\.1"):
        kibana.kibana_import(f"http://127.0.0.1:{port}", NDJSON, timeout=5)
    assert time.monotonic() - t0 < 3
    # a server that accepts the connection and never answers: the time-out says so
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(kibana.KibanaError, match="no answer within 0.5 s"):
            kibana.kibana_import(f"http://127.0.0.1:{lst.getsockname()[1]}", NDJSON,
                                 timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        lst.close()
    assert kibana.main(["--kibana-url", f"http://127.0.0.1:{port}"], environ={}) == 1


def test_usage_errors():
    assert kibana.main(["--kibana-url", "ftp://x"], environ={}) == kibana.EXIT_USAGE
    assert kibana.main(["--file", "/nonexistent.ndjson"], environ={}) == kibana.EXIT_USAGE
    assert kibana.main(["--space", "Bad Space"], environ={}) == kibana.EXIT_USAGE
    assert kibana.main(["--bogus"], environ={}) == kibana.EXIT_USAGE
    assert kibana.DEFAULT_FILE == NDJSON
    with pytest.raises(kibana.KibanaError, match="control characters") as ei:
        kibana.kibana_import("http://127.0.0.1:9", NDJSON, api_key="abc\r\nX-Evil: 1")
    assert "Evil" not in str(ei.value)


def test_https_with_an_unknown_ca_says_so(tmp_path):
    """A TLS Kibana whose certificate is not trusted: the message names --ca-certs."""
    ssl = pytest.importorskip("ssl")
    import subprocess
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {r.stderr[-200:]!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with FakeKibana(tls=ctx) as kb:
        url = kb.url
        with pytest.raises(kibana.KibanaError, match="--ca-certs"):
            kibana.kibana_import(url, NDJSON, timeout=5)
        answer = kibana.kibana_import(url, NDJSON, ca_certs=str(cert), timeout=5)
        assert answer["success"]
