"""An in-process fake Elasticsearch for the tests: the part of the REST contract c2scribe uses.

No Elasticsearch server can be installed where the tests run, so this one implements, with the
status codes and response bodies a real 8.x/9.x node sends:

- ``GET /`` (version configurable) and ``HEAD /``; every answer has ``X-Elastic-Product:
  Elasticsearch`` as a real node's does (the Python client checks it);
- REST API compatibility: ``compatible-with=N`` media types in ``Accept``/``Content-Type`` are
  accepted for the server's major and the one before, anything else is refused with 400
  ``media_type_header_exception`` (so an 8.x fake refuses the 9.x client's default
  ``compatible-with=9``, as Elasticsearch 8 does); a versioned Accept with an unversioned
  Content-Type (or the reverse) on a request with a body is refused too;
- security: when users or API keys are configured, ``Authorization: Basic``/``ApiKey`` is
  checked and a failure answers 401 ``security_exception`` with ``WWW-Authenticate``;
- ``_component_template`` and ``_index_template`` (PUT/GET/DELETE), with the checks a real
  node makes: mapping types and their parameters, index settings, component templates that
  must exist, two templates of the same priority whose patterns overlap;
- ``_bulk``: NDJSON parsing (terminating newline, action/metadata lines ``index``, ``create``,
  ``update``, ``delete``, their parameters), indices created on first write from the
  matching composable template, per-item results with real shapes (created/updated/deleted/
  not_found, 409 version conflicts, 400 document parsing errors when a value does not fit the
  mapping: a string into a ``long``, a bad ``ip`` or ``date_nanos``, a scalar into an object
  or a ``flattened`` field ...), and the ``errors`` flag;
- ``_refresh``, ``_count``, ``_search`` (match_all, term, ids), ``_doc/<id>``, ``_mapping``,
  ``_delete_by_query``, ``DELETE /<index>``;
- faults: 429 ``es_rejected_execution_exception`` for the first N bulk requests (whole request
  or per item), a 503 outage from the Nth bulk request on (for M requests or for good), and
  connections dropped without an answer (an unreachable node mid-run).

Every request is kept (method, path, query, headers, body) for assertions. Pure standard
library; one ThreadingHTTPServer on 127.0.0.1 and a free port.
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import fnmatch
import gzip
import ipaddress
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# ------------------------------------------------------------------------ what a node accepts

_COMMON = {"meta", "fields", "copy_to", "index", "store", "doc_values", "null_value", "script",
           "on_script_error"}
MAPPING_PARAMS: dict[str, set[str]] = {
    "keyword": _COMMON | {"ignore_above", "normalizer", "eager_global_ordinals", "similarity",
                          "split_queries_on_whitespace", "time_series_dimension",
                          "index_options", "norms"},
    "long": _COMMON | {"coerce", "ignore_malformed", "time_series_dimension",
                       "time_series_metric"},
    "integer": _COMMON | {"coerce", "ignore_malformed"},
    "float": _COMMON | {"coerce", "ignore_malformed"},
    "double": _COMMON | {"coerce", "ignore_malformed"},
    "boolean": _COMMON | {"ignore_malformed"},
    "date": _COMMON | {"format", "locale", "ignore_malformed"},
    "date_nanos": _COMMON | {"format", "locale", "ignore_malformed"},
    "ip": _COMMON | {"ignore_malformed", "time_series_dimension"},
    "flattened": {"meta", "ignore_above", "depth_limit", "doc_values", "eager_global_ordinals",
                  "index", "index_options", "null_value", "similarity",
                  "split_queries_on_whitespace", "time_series_dimensions"},
    "wildcard": {"meta", "fields", "copy_to", "ignore_above", "null_value"},
    "match_only_text": {"meta", "fields", "copy_to"},
    "text": {"meta", "fields", "copy_to", "analyzer", "search_analyzer", "index", "store",
             "norms", "index_options", "fielddata", "similarity", "position_increment_gap",
             "term_vector", "index_prefixes", "index_phrases", "search_quote_analyzer"},
    "object": {"properties", "dynamic", "enabled", "subobjects", "type"},
}
ROOT_MAPPING_PARAMS = {"dynamic", "date_detection", "numeric_detection", "properties", "_meta",
                       "_source", "dynamic_templates", "_routing", "runtime", "subobjects",
                       "dynamic_date_formats", "enabled"}
KNOWN_SETTINGS = {"index.number_of_shards", "index.number_of_replicas",
                  "index.auto_expand_replicas", "index.codec", "index.refresh_interval",
                  "index.mapping.total_fields.limit", "index.mapping.ignore_malformed",
                  "index.mapping.depth.limit", "index.max_result_window", "index.lifecycle.name",
                  "index.default_pipeline", "index.final_pipeline", "index.hidden"}
CODECS = {"default", "best_compression", "best_speed", "legacy_default",
          "legacy_best_compression", "lucene_default"}
WWW_AUTHENTICATE = ['Basic realm="security", charset="UTF-8"', 'Bearer realm="security"',
                    "ApiKey"]
_ISO = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})"
                  r"(?:[.,](\d{1,9}))?)?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?$")
_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)", re.I)
_MEDIA_OK = re.compile(r"^application/(?:vnd\.elasticsearch\+)?(?:json|x-ndjson)\b", re.I)
_BAD_INDEX_CHARS = set('\\/*?"<>| ,#:')


class EsError(Exception):
    """An error answer: status and the `error` object a node sends."""

    def __init__(self, status: int, type_: str, reason: str, *, caused_by: dict | None = None,
                 extra: dict | None = None, root_extra: dict | None = None):
        super().__init__(reason)
        self.status, self.type, self.reason = status, type_, reason
        self.caused_by, self.extra, self.root_extra = caused_by, extra or {}, root_extra

    def error(self) -> dict:
        root = {"type": self.type, "reason": self.reason, **(self.root_extra or self.extra)}
        err = {"root_cause": [root], "type": self.type, "reason": self.reason, **self.extra}
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return err

    def item_error(self) -> dict:
        err = {"type": self.type, "reason": self.reason, **self.extra}
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return err

    def body(self) -> dict:
        return {"error": self.error(), "status": self.status}


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]          # lower-case names
    body: bytes
    status: int | None = None
    response: Any = None

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list:
        return [json.loads(line) for line in self.body.decode().split("\n") if line]


@dataclasses.dataclass
class Index:
    name: str
    mappings: dict
    settings: dict
    template: str | None
    docs: dict = dataclasses.field(default_factory=dict)       # id -> [source, version, seq]
    seq: int = 0


class FakeElasticsearch:
    """The fake node. Use as a context manager, or start()/stop(); its URL is ``.url``."""

    def __init__(self, version: str = "8.15.0", *, users: dict[str, str] | None = None,
                 api_keys: dict[str, str] | None = None, flavor: str = "default"):
        self.version = version
        self.major = int(version.split(".")[0])
        self.minor = int(version.split(".")[1])
        self.flavor = flavor
        self.users = dict(users or {})
        self.api_keys = dict(api_keys or {})
        self.requests: list[Request] = []
        self.component_templates: dict[str, dict] = {}
        self.index_templates: dict[str, dict] = {}
        self.indices: dict[str, Index] = {}
        self.lock = threading.RLock()
        self._auto_id = 0
        # faults (bulk requests are counted from 1)
        self.bulk_429 = 0                  # the first N bulk requests: whole-request 429
        self.item_429 = 0                  # the first N bulk requests: every item 429
        self.outage_after: int | None = None   # bulk requests after the Nth: outage_status
        self.outage_status = 503
        self.outage_requests: int | None = None  # the outage's length (None: for good)
        self.drop_after: int | None = None     # bulk requests after the Nth: connection dropped
        self.drop_requests: int | None = None
        self.bulk_count = 0
        self._outage_seen = 0
        self._drop_seen = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.closed = False

    # ---------------------------------------------------------------------------- lifecycle
    def start(self) -> "FakeElasticsearch":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):           # quiet
                pass

            def _any(self):
                fake._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        self.closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------------- inspection
    def bulk_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/_bulk")]

    def docs(self, pattern: str = "*") -> dict[tuple[str, str], dict]:
        with self.lock:
            return {(i.name, _id): d[0] for i in self.indices.values()
                    if fnmatch.fnmatchcase(i.name, pattern) for _id, d in i.docs.items()}

    def count(self, pattern: str = "*") -> int:
        return len(self.docs(pattern))

    # ----------------------------------------------------------------------------- serving
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        n = int(headers.get("content-length") or 0)
        body = h.rfile.read(n) if n else b""
        if headers.get("content-encoding", "").lower() == "gzip" and body:
            body = gzip.decompress(body)
        req = Request(h.command, urllib.parse.unquote(parsed.path),
                      dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
                      headers, body)
        with self.lock:
            self.requests.append(req)
        if self.closed or self._drop(req):
            h.close_connection = True           # no answer: the client sees a dead node
            return
        extra_headers: list[tuple[str, str]] = []
        try:
            accept_v = self._check_media_types(req)
            self._check_auth(req)
            status, resp = self._route(req)
        except EsError as e:
            accept_v = _version_of(req.headers.get("accept"))
            status, resp = e.status, e.body()
            if e.type == "security_exception":
                extra_headers = [("WWW-Authenticate", v) for v in WWW_AUTHENTICATE]
        req.status, req.response = status, resp
        if accept_v is not None and accept_v in (self.major, self.major - 1):
            ctype = f"application/vnd.elasticsearch+json;compatible-with={accept_v}"
        else:
            ctype = "application/json"
        data = b"" if resp is None else json.dumps(resp).encode()
        h.send_response(status)
        h.send_header("X-elastic-product", "Elasticsearch")
        h.send_header("content-type", ctype)
        for k, v in extra_headers:
            h.send_header(k, v)
        h.send_header("content-length", str(0 if h.command == "HEAD" else len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _drop(self, req: Request) -> bool:
        if not req.path.rstrip("/").endswith("/_bulk") or self.drop_after is None:
            return False
        with self.lock:
            done = len([r for r in self.requests if r.path.rstrip("/").endswith("/_bulk")
                        and r.status is not None])
            if done >= self.drop_after and (self.drop_requests is None
                                            or self._drop_seen < self.drop_requests):
                self._drop_seen += 1
                return True
        return False

    # ---------------------------------------------------------------- media types and auth
    def _check_media_types(self, req: Request) -> int | None:
        accept = req.headers.get("accept")
        ctype = req.headers.get("content-type")
        av = _version_of(accept)
        has_body = bool(req.body)
        cv = _version_of(ctype) if has_body else None
        allowed = (self.major, self.major - 1)
        headers = "[Content-Type, Accept]" if has_body else "[Accept]"

        def fail(reason: str):
            raise EsError(400, "media_type_header_exception",
                          f"Invalid media-type value on headers {headers}",
                          caused_by={"type": "status_exception", "reason": reason})

        if av is not None and av not in allowed:
            fail(f"Accept version must be either version {self.major} or {self.major - 1}, "
                 f"but found {av}. Accept={accept}")
        if has_body:
            if cv is not None and cv not in allowed:
                fail(f"Content-Type version must be either version {self.major} or "
                     f"{self.major - 1}, but found {cv}. Content-Type={ctype}")
            if av is not None and cv is not None and av != cv:
                fail("A compatible version is required on both Content-Type and Accept "
                     "headers if either one has requested a compatible version and the "
                     f"compatible versions must match. Accept={accept}, Content-Type={ctype}")
            if (av is None) != (cv is None) and accept and "*/*" not in accept:
                fail("A compatible version is required on both Content-Type and Accept "
                     "headers if either one has requested a compatible version. "
                     f"Accept={accept}, Content-Type={ctype}")
            if ctype is None or not _MEDIA_OK.match(ctype.strip()):
                raise EsError(406, "media_type_header_exception",
                              f"Content-Type header [{ctype}] is not supported")
        return av

    def _check_auth(self, req: Request) -> None:
        if not (self.users or self.api_keys):
            return
        uri = req.path + (("?" + urllib.parse.urlencode(req.query)) if req.query else "")
        h = req.headers.get("authorization", "")
        scheme, _, cred = h.partition(" ")
        extra = {"header": {"WWW-Authenticate": WWW_AUTHENTICATE}}
        if scheme.lower() == "basic" and cred:
            user, _, pw = _b64(cred).partition(":")
            if self.users.get(user) == pw and user in self.users:
                return
            raise EsError(401, "security_exception",
                          f"unable to authenticate user [{user}] for REST request [{uri}]",
                          extra=extra)
        if scheme.lower() == "apikey" and cred:
            kid, _, key = _b64(cred).partition(":")
            if kid in self.api_keys and self.api_keys[kid] == key:
                return
            why = (f"unable to find apikey with id {kid}" if kid not in self.api_keys
                   else f"invalid credentials for API key [{kid}]")
            raise EsError(401, "security_exception",
                          "unable to authenticate with provided credentials and anonymous "
                          "access is not allowed for this request",
                          extra={"additional_unsuccessful_credentials": f"API key: {why}",
                                 **extra})
        raise EsError(401, "security_exception",
                      f"missing authentication credentials for REST request [{uri}]",
                      extra=extra)

    # --------------------------------------------------------------------------- routing
    def _route(self, req: Request) -> tuple[int, Any]:
        parts = [p for p in req.path.split("/") if p]
        m = req.method
        if not parts:
            if m in ("GET", "HEAD"):
                return 200, None if m == "HEAD" else self._info()
        elif parts[0] == "_component_template" and len(parts) <= 2:
            return self._component(m, parts[1] if len(parts) > 1 else None, req)
        elif parts[0] == "_index_template" and len(parts) <= 2:
            return self._index_template(m, parts[1] if len(parts) > 1 else None, req)
        elif parts[-1] == "_bulk" and len(parts) <= 2 and m in ("POST", "PUT"):
            return self._bulk(req, parts[0] if len(parts) == 2 else None)
        elif parts[-1] == "_refresh" and len(parts) <= 2 and m in ("POST", "GET"):
            names = self._resolve(parts[0]) if len(parts) == 2 else list(self.indices)
            return 200, {"_shards": {"total": len(names), "successful": len(names),
                                     "failed": 0}}
        elif len(parts) == 2 and parts[1] in ("_count", "_search") and m in ("GET", "POST"):
            return self._query(parts[0], parts[1], req)
        elif len(parts) == 2 and parts[1] == "_delete_by_query" and m == "POST":
            return self._delete_by_query(parts[0], req)
        elif len(parts) == 2 and parts[1] == "_mapping" and m == "GET":
            return 200, {n: {"mappings": self.indices[n].mappings}
                         for n in self._resolve(parts[0])}
        elif len(parts) == 3 and parts[1] == "_doc" and m in ("GET", "DELETE"):
            return self._doc(m, parts[0], parts[2])
        elif len(parts) == 1 and not parts[0].startswith("_") and m in ("DELETE", "HEAD",
                                                                          "GET"):
            names = self._resolve(parts[0])
            if m == "DELETE":
                with self.lock:
                    for n in names:
                        del self.indices[n]
                return 200, {"acknowledged": True}
            if m == "HEAD":
                return 200, None
            return 200, {n: {"mappings": self.indices[n].mappings,
                             "settings": self.indices[n].settings} for n in names}
        raise _no_handler(req)

    def _info(self) -> dict:
        return {"name": "fake-node-1", "cluster_name": "fake-cluster",
                "cluster_uuid": "fAkEcLuStEr0UuIdAaAaAa",
                "version": {"number": self.version, "build_flavor": self.flavor,
                            "build_type": "tar", "build_hash": "0" * 40,
                            "build_date": "2024-08-05T10:05:34.233336849Z",
                            "build_snapshot": False,
                            "lucene_version": "9.11.1" if self.major == 8 else "10.2.2",
                            "minimum_wire_compatibility_version":
                                "7.17.0" if self.major == 8 else "8.18.0",
                            "minimum_index_compatibility_version":
                                "7.0.0" if self.major == 8 else "8.0.0"},
                "tagline": "You Know, for Search"}

    # ------------------------------------------------------------------------ templates
    def _component(self, m: str, name: str | None, req: Request):
        with self.lock:
            if m == "PUT" and name:
                body = _body_json(req)
                tmpl = body.get("template")
                if not isinstance(tmpl, dict):
                    raise EsError(400, "x_content_parse_exception",
                                  "[1:2] [component_template] failed to parse field "
                                  "[template]" if tmpl is not None else
                                  "Required [template]")
                self._check_template(tmpl)
                self.component_templates[name] = body
                return 200, {"acknowledged": True}
            if m == "GET":
                got = {n: t for n, t in self.component_templates.items()
                       if name is None or fnmatch.fnmatchcase(n, name)}
                if name and not got:
                    raise EsError(404, "resource_not_found_exception",
                                  f"component template matching [{name}] not found")
                return 200, {"component_templates": [{"name": n, "component_template": t}
                                                     for n, t in sorted(got.items())]}
            if m == "DELETE" and name:
                if name not in self.component_templates:
                    raise EsError(404, "resource_not_found_exception", name)
                del self.component_templates[name]
                return 200, {"acknowledged": True}
        raise _no_handler(req)

    def _index_template(self, m: str, name: str | None, req: Request):
        with self.lock:
            if m == "PUT" and name:
                body = _body_json(req)
                pats = body.get("index_patterns")
                if isinstance(pats, str):
                    pats = [pats]
                if not pats:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index patterns are missing;")
                missing = [c for c in body.get("composed_of", [])
                           if c not in self.component_templates]
                if missing:
                    raise EsError(400, "invalid_index_template_exception",
                                  f"index_template [{name}] invalid, cause [index template "
                                  f"[{name}] specifies component templates {_list(missing)} "
                                  "that do not exist]")
                if "template" in body:
                    self._check_template(body["template"])
                prio = body.get("priority", 0)
                for other, t in self.index_templates.items():
                    if other == name or t.get("priority", 0) != prio:
                        continue
                    if any(_overlap(p, q) for p in pats for q in t["index_patterns"]):
                        raise EsError(400, "illegal_argument_exception",
                                      f"index template [{name}] has index patterns "
                                      f"{_list(pats)} matching patterns from existing "
                                      f"templates [{other}] with patterns ({other} => "
                                      f"{_list(t['index_patterns'])}) that have the same "
                                      f"priority [{prio}], multiple index templates may not "
                                      "match during index creation, please use a different "
                                      "priority")
                self.index_templates[name] = {**body, "index_patterns": pats}
                return 200, {"acknowledged": True}
            if m == "GET":
                got = {n: t for n, t in self.index_templates.items()
                       if name is None or fnmatch.fnmatchcase(n, name)}
                if name and not got:
                    raise EsError(404, "resource_not_found_exception",
                                  f"index template matching [{name}] not found")
                return 200, {"index_templates": [{"name": n, "index_template": t}
                                                 for n, t in sorted(got.items())]}
            if m == "DELETE" and name:
                if name not in self.index_templates:
                    raise EsError(404, "resource_not_found_exception",
                                  f"index_template [{name}] missing")
                del self.index_templates[name]
                return 200, {"acknowledged": True}
        raise _no_handler(req)

    def _check_template(self, tmpl: dict) -> None:
        for k in tmpl:
            if k not in ("settings", "mappings", "aliases", "lifecycle"):
                raise EsError(400, "x_content_parse_exception",
                              f"[1:2] [template] unknown field [{k}]")
        settings = _flat_settings(tmpl.get("settings") or {})
        for k, v in settings.items():
            if k not in KNOWN_SETTINGS:
                raise EsError(400, "illegal_argument_exception",
                              f"unknown setting [{k}] please check that any required plugins "
                              "are installed, or check the breaking changes documentation "
                              "for removed settings")
            if k == "index.codec" and v not in CODECS:
                raise EsError(400, "illegal_argument_exception",
                              f"unknown value for [index.codec] must be one of [default, "
                              f"lz4, best_compression, zstd, best_speed] but was: {v}")
        mappings = tmpl.get("mappings")
        if mappings is not None:
            bad = [k for k in mappings if k not in ROOT_MAPPING_PARAMS]
            if bad:
                raise _mapper(f"Root mapping definition has unsupported parameters:  "
                              f"[{bad[0]} : {json.dumps(mappings[bad[0]])}]")
            dyn = mappings.get("dynamic", True)
            if dyn not in (True, False, "true", "false", "strict", "runtime"):
                raise _mapper(f"Could not convert [dynamic] to boolean: [{dyn}]")
            self._check_properties(mappings.get("properties") or {}, "")

    def _check_properties(self, props: dict, path: str) -> None:
        for name, m in props.items():
            full = f"{path}{name}"
            if not isinstance(m, dict):
                raise _mapper(f"Expected map for property [fields] on field [{full}] but got "
                              f"a class java.lang.String")
            t = m.get("type", "object" if "properties" in m else None)
            if t is None:
                raise _mapper(f"No type specified for field [{full}]")
            if t not in MAPPING_PARAMS:
                raise _mapper(f"No handler for type [{t}] declared on field [{name}]")
            for p in m:
                if p != "type" and p not in MAPPING_PARAMS[t]:
                    raise _mapper(f"unknown parameter [{p}] on mapper [{full}] of type [{t}]")
            if t == "object":
                self._check_properties(m.get("properties") or {}, full + ".")
            for sub, sm in (m.get("fields") or {}).items():
                self._check_properties({sub: sm}, full + ".")

    def _template_for(self, index: str) -> tuple[str | None, dict, dict]:
        """(template name, mappings, settings) an index created now gets."""
        best = None
        for name, t in self.index_templates.items():
            if any(fnmatch.fnmatchcase(index, p) for p in t["index_patterns"]):
                if best is None or t.get("priority", 0) > best[1].get("priority", 0):
                    best = (name, t)
        if best is None:
            return None, {"properties": {}}, {}
        mappings: dict = {}
        settings: dict = {}
        for comp in best[1].get("composed_of", []) + [None]:
            tmpl = (self.component_templates[comp]["template"] if comp
                    else best[1].get("template") or {})
            _merge(mappings, copy.deepcopy(tmpl.get("mappings") or {}))
            settings.update(_flat_settings(tmpl.get("settings") or {}))
        mappings.setdefault("properties", {})
        return best[0], mappings, settings

    # ------------------------------------------------------------------------------ bulk
    def _bulk(self, req: Request, default_index: str | None):
        with self.lock:
            self.bulk_count += 1
            n = self.bulk_count
            if n <= self.bulk_429:
                reason = ("rejected execution of coordinating operation [coordinating_and_"
                          f"primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_"
                          f"operation_bytes={len(req.body)}, max_coordinating_and_primary_"
                          "bytes=0]")
                raise EsError(429, "es_rejected_execution_exception", reason)
            if self.outage_after is not None and n > self.outage_after and (
                    self.outage_requests is None or self._outage_seen < self.outage_requests):
                self._outage_seen += 1
                raise EsError(self.outage_status, "cluster_block_exception",
                              "blocked by: [SERVICE_UNAVAILABLE/2/no master];")
            t0 = time.monotonic()
            if req.body and not req.body.endswith(b"\n"):
                raise EsError(400, "illegal_argument_exception",
                              "The bulk request must be terminated by a newline [\\n]")
            lines = req.body.decode("utf-8").split("\n")[:-1] if req.body else []
            ops = []
            i = 0
            while i < len(lines):
                line_no = i + 1
                if not lines[i].strip():
                    i += 1
                    continue
                try:
                    act = json.loads(lines[i])
                except ValueError:
                    raise EsError(400, "x_content_parse_exception",
                                  f"[1:1] Unexpected character in action/metadata line "
                                  f"[{line_no}]") from None
                if not isinstance(act, dict) or len(act) != 1:
                    raise EsError(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{line_no}], expected "
                                  "START_OBJECT or END_OBJECT but found [VALUE_STRING]")
                (op, meta), = act.items()
                if op not in ("index", "create", "update", "delete"):
                    raise EsError(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{line_no}], expected one "
                                  f"of [create, delete, index, update] but found [{op}]")
                for k in meta:
                    if k not in ("_index", "_id", "routing", "if_seq_no", "if_primary_term",
                                 "version", "version_type", "pipeline", "require_alias",
                                 "dynamic_templates", "retry_on_conflict", "_source",
                                 "require_data_stream", "list_executed_pipelines"):
                        raise EsError(400, "illegal_argument_exception",
                                      f"Action/metadata line [{line_no}] contains an unknown "
                                      f"parameter [{k}]")
                index = meta.get("_index", default_index)
                if not index:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index is missing;")
                source = None
                if op != "delete":
                    i += 1
                    if i >= len(lines):
                        raise EsError(400, "illegal_argument_exception",
                                      "The bulk request must be terminated by a newline [\\n]")
                    source = lines[i]
                ops.append((op, index, meta.get("_id"), source))
                i += 1
            items = [self._item(op, index, _id, source, item_429=n <= self.item_429)
                     for op, index, _id, source in ops]
            errors = any("error" in next(iter(it.values())) for it in items)
            return 200, {"errors": errors, "took": int((time.monotonic() - t0) * 1000),
                         "items": items}

    def _item(self, op: str, index: str, _id: str | None, source: str | None,
              item_429: bool) -> dict:
        res: dict[str, Any] = {"_index": index}
        try:
            _check_index_name(index)
            if _id is None:
                if op in ("update", "delete"):
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: id is missing;")
                self._auto_id += 1
                _id = f"fAkE{self._auto_id:016d}"
            res["_id"] = _id
            if item_429:
                raise EsError(429, "es_rejected_execution_exception",
                              f"rejected execution of primary operation [shard_detail=["
                              f"{index}][0][C], shard_max_coordinating_and_primary_bytes=0, "
                              "shard_max_replica_bytes=0]")
            idx = self.indices.get(index)
            if op == "delete":
                if idx is None or _id not in idx.docs:
                    if idx is None:
                        raise EsError(404, "index_not_found_exception",
                                      f"no such index [{index}]",
                                      extra={"resource.type": "index_expression",
                                             "resource.id": index, "index_uuid": "_na_",
                                             "index": index})
                    return {op: {**res, "_version": 1, "result": "not_found",
                                 "_shards": _SHARDS, "_seq_no": idx.seq,
                                 "_primary_term": 1, "status": 404}}
                ver = idx.docs.pop(_id)[1] + 1
                idx.seq += 1
                return {op: {**res, "_version": ver, "result": "deleted", "_shards": _SHARDS,
                             "_seq_no": idx.seq, "_primary_term": 1, "status": 200}}
            try:
                doc = json.loads(source)
            except ValueError as e:
                raise EsError(400, self._parse_type(),
                              f"[1:1] failed to parse: {e}") from None
            if op == "update":
                if idx is None or _id not in idx.docs:
                    raise EsError(404, "document_missing_exception",
                                  f"[{_id}]: document missing",
                                  extra={"index_uuid": "aAaA", "shard": "0", "index": index})
                merged = copy.deepcopy(idx.docs[_id][0])
                merged.update(doc.get("doc") or {})
                doc = merged
            if not isinstance(doc, dict):
                raise EsError(400, self._parse_type(), "[1:1] failed to parse: source is not "
                              "an object")
            if idx is None:
                name, mappings, settings = self._template_for(index)
                idx = self.indices[index] = Index(index, mappings, settings, name)
            self._validate(idx, doc, _id, source)
            if op == "create" and _id in idx.docs:
                raise EsError(409, "version_conflict_engine_exception",
                              f"[{_id}]: version conflict, document already exists "
                              f"(current version [{idx.docs[_id][1]}])",
                              extra={"index_uuid": "aAaA", "shard": "0", "index": index})
            old = idx.docs.get(_id)
            ver = 1 if old is None else old[1] + 1
            idx.seq += 1
            idx.docs[_id] = [doc, ver, idx.seq]
            created = old is None
            return {op: {**res, "_version": ver, "result": "created" if created else "updated",
                         "_shards": _SHARDS, "_seq_no": idx.seq - 1, "_primary_term": 1,
                         "status": 201 if created else 200}}
        except EsError as e:
            return {op: {**res, "status": e.status, "error": e.item_error()}}

    def _parse_type(self) -> str:
        return ("document_parsing_exception" if (self.major, self.minor) >= (8, 8)
                else "mapper_parsing_exception")

    # -------------------------------------------------------------------------- values
    def _validate(self, idx: Index, doc: dict, _id: str, raw: str) -> None:
        dynamic = idx.mappings.get("dynamic", True)
        self._walk(doc, idx.mappings.setdefault("properties", {}), "", dynamic, _id, raw)

    def _walk(self, obj: dict, props: dict, path: str, dynamic, _id: str, raw: str) -> None:
        for key, v in obj.items():
            if key == "" or not key.strip("."):
                raise EsError(400, self._parse_type(),
                              "[1:2] field name cannot be an empty string")
            self._field(key.split("."), v, props, path, dynamic, _id, raw)

    def _field(self, parts: list[str], v, props: dict, path: str, dynamic, _id, raw) -> None:
        name = parts[0]
        full = path + name
        m = props.get(name)
        if m is None:
            if dynamic in (False, "false"):
                return
            if dynamic == "strict":
                raise EsError(400, "strict_dynamic_mapping_exception",
                              f"[1:2] mapping set to strict, dynamic introduction of [{name}] "
                              f"within [{path.rstrip('.') or '_doc'}] is not allowed")
            m = props[name] = ({"properties": {}} if len(parts) > 1 or isinstance(v, dict)
                               else _dynamic(v))
        if len(parts) > 1:
            t = m.get("type", "object" if "properties" in m else None)
            if t == "object":
                self._field(parts[1:], v, m.setdefault("properties", {}), full + ".",
                            m.get("dynamic", dynamic), _id, raw)
            elif t == "flattened":
                self._flattened(m, {".".join(parts[1:]): v}, full, _id, raw)
            else:
                raise EsError(400, self._parse_type(),
                              f"[1:2] Could not dynamically add mapping for field "
                              f"[{full}.{'.'.join(parts[1:])}]. Existing mapping for [{full}] "
                              f"must be of type object but found [{t}].")
            return
        self._value(m, v, full, dynamic, _id, raw)

    def _value(self, m: dict, v, full: str, dynamic, _id, raw) -> None:
        if v is None:
            return
        t = m.get("type", "object" if "properties" in m else None)
        if isinstance(v, list):
            for x in v:
                self._value(m, x, full, dynamic, _id, raw)
            return
        if t == "object":
            if not isinstance(v, dict):
                raise EsError(400, self._parse_type(),
                              f"[1:{_col(raw, full)}] object mapping for [{full}] tried to "
                              f"parse field [{full}] as object, but found a concrete value")
            self._walk(v, m.setdefault("properties", {}), full + ".", m.get("dynamic", dynamic),
                       _id, raw)
            return
        if t == "flattened":
            self._flattened(m, v, full, _id, raw)
            return

        def bad(cause_type: str, cause: str):
            raise EsError(400, self._parse_type(),
                          f"[1:{_col(raw, full)}] failed to parse field [{full}] of type [{t}] "
                          f"in document with id '{_id}'. Preview of field's value: "
                          f"'{_preview(v)}'", caused_by={"type": cause_type, "reason": cause})

        if isinstance(v, dict):
            bad("illegal_state_exception", f"Can't get text on a START_OBJECT at 1:"
                                           f"{_col(raw, full)}")
        if t in ("long", "integer"):
            if isinstance(v, bool):
                bad("json_parse_exception", "Current token (VALUE_TRUE) not numeric, can not "
                                            "use numeric value accessors")
            try:
                n = int(float(v)) if isinstance(v, (str, float)) else int(v)
                if isinstance(v, str):
                    float(v)
            except (TypeError, ValueError, OverflowError):
                bad("illegal_argument_exception", f'For input string: "{v}"')
            lim = (1 << 63) if t == "long" else (1 << 31)
            if not -lim <= n < lim:
                bad("input_coercion_exception", f"Numeric value ({v}) out of range of {t}")
        elif t == "boolean":
            if v not in (True, False, "true", "false", ""):
                bad("illegal_argument_exception", f"Failed to parse value [{v}] as only [true] "
                                                  "or [false] are allowed.")
        elif t == "ip":
            try:
                ipaddress.ip_address(str(v))
            except ValueError:
                bad("illegal_argument_exception", f"'{v}' is not an IP string literal.")
        elif t in ("date", "date_nanos"):
            fmt = m.get("format", "strict_date_optional_time_nanos||epoch_millis"
                        if t == "date_nanos" else "strict_date_optional_time||epoch_millis")
            ns = _date_ns(v)
            if ns is None:
                bad("illegal_argument_exception",
                    f"failed to parse date field [{v}] with format [{fmt}]")
            if t == "date_nanos" and ns < 0:
                bad("illegal_argument_exception", f"date[{v}] is before the epoch in 1970 and "
                                                  "cannot be stored in nanosecond resolution")
            if t == "date_nanos" and ns >= (1 << 63):
                bad("illegal_argument_exception", f"date[{v}] is after "
                                                  "2262-04-11T23:47:16.854775807 and cannot be "
                                                  "stored in nanosecond resolution")
        # keyword, wildcard, text, match_only_text: any scalar

    def _flattened(self, m: dict, v, full: str, _id, raw) -> None:
        if isinstance(v, list):
            for x in v:
                self._flattened(m, x, full, _id, raw)
            return
        if v is None:
            return
        if not isinstance(v, dict):
            raise EsError(400, self._parse_type(),
                          f"[1:{_col(raw, full)}] failed to parse field [{full}] of type "
                          f"[flattened] in document with id '{_id}'. Preview of field's value: "
                          f"'{_preview(v)}'",
                          caused_by={"type": "illegal_argument_exception",
                                     "reason": f"[flattened] fields must be objects, found "
                                               f"{type(v).__name__} [{_preview(v)}]"})
        limit = m.get("depth_limit", 20)

        def depth(o, d=1):
            if isinstance(o, dict):
                if d > limit:
                    raise EsError(400, self._parse_type(),
                                  f"[1:{_col(raw, full)}] failed to parse field [{full}] of "
                                  f"type [flattened] in document with id '{_id}'.",
                                  caused_by={"type": "illegal_argument_exception",
                                             "reason": f"The provided [flattened] field "
                                                       f"[{full}] exceeds the maximum depth "
                                                       f"limit of [{limit}]."})
                for x in o.values():
                    depth(x, d + 1)
            elif isinstance(o, list):
                for x in o:
                    depth(x, d)
        depth(v)

    # ------------------------------------------------------------------------- queries
    def _resolve(self, expr: str, must_exist: bool = True) -> list[str]:
        out = []
        for part in expr.split(","):
            if part in ("_all", "*"):
                out += list(self.indices)
            elif "*" in part or "?" in part:
                out += [n for n in self.indices if fnmatch.fnmatchcase(n, part)]
            elif part in self.indices:
                out.append(part)
            elif must_exist:
                raise EsError(404, "index_not_found_exception", f"no such index [{part}]",
                              extra={"resource.type": "index_or_alias", "resource.id": part,
                                     "index_uuid": "_na_", "index": part})
        return sorted(set(out))

    def _matching(self, expr: str, query: dict | None) -> list[tuple[str, str, dict]]:
        hits = []
        for n in self._resolve(expr):
            for _id, (src, _v, seq) in sorted(self.indices[n].docs.items(),
                                              key=lambda kv: kv[1][2]):
                if _matches(query, _id, src):
                    hits.append((n, _id, src))
        return hits

    def _query(self, expr: str, what: str, req: Request):
        body = _body_json(req) if req.body else {}
        with self.lock:
            hits = self._matching(expr, body.get("query"))
        shards = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
        if what == "_count":
            return 200, {"count": len(hits), "_shards": shards}
        size = int(body.get("size", req.query.get("size", 10)))
        return 200, {"took": 1, "timed_out": False, "_shards": shards,
                     "hits": {"total": {"value": len(hits), "relation": "eq"},
                              "max_score": 1.0 if hits else None,
                              "hits": [{"_index": n, "_id": i, "_score": 1.0, "_source": s}
                                       for n, i, s in hits[:size]]}}

    def _delete_by_query(self, expr: str, req: Request):
        body = _body_json(req)
        with self.lock:
            hits = self._matching(expr, body.get("query"))
            for n, i, _s in hits:
                del self.indices[n].docs[i]
        return 200, {"took": 1, "timed_out": False, "total": len(hits), "deleted": len(hits),
                     "batches": 1, "version_conflicts": 0, "noops": 0,
                     "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                     "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}

    def _doc(self, m: str, index: str, _id: str):
        with self.lock:
            idx = self.indices.get(index)
            if idx is None:
                raise EsError(404, "index_not_found_exception", f"no such index [{index}]",
                              extra={"resource.type": "index_expression",
                                     "resource.id": index, "index_uuid": "_na_",
                                     "index": index})
            d = idx.docs.get(_id)
            if m == "DELETE":
                if d is None:
                    return 404, {"_index": index, "_id": _id, "_version": 1,
                                 "result": "not_found", "_shards": _SHARDS,
                                 "_seq_no": idx.seq, "_primary_term": 1}
                del idx.docs[_id]
                return 200, {"_index": index, "_id": _id, "_version": d[1] + 1,
                             "result": "deleted", "_shards": _SHARDS, "_seq_no": idx.seq,
                             "_primary_term": 1}
            if d is None:
                return 404, {"_index": index, "_id": _id, "found": False}
            return 200, {"_index": index, "_id": _id, "_version": d[1], "_seq_no": d[2] - 1,
                         "_primary_term": 1, "found": True, "_source": d[0]}


# ------------------------------------------------------------------------------ helpers

_SHARDS = {"total": 2, "successful": 1, "failed": 0}


def _version_of(media: str | None) -> int | None:
    if not media:
        return None
    m = _COMPAT.search(media)
    return int(m.group(1)) if m else None


def _b64(s: str) -> str:
    try:
        return base64.b64decode(s.strip()).decode("utf-8", "replace")
    except ValueError:
        return ""


def _body_json(req: Request):
    try:
        return json.loads(req.body or b"{}")
    except ValueError:
        raise EsError(400, "x_content_parse_exception",
                      "[1:1] Unexpected character: was expecting a JSON value") from None


def _no_handler(req: Request) -> EsError:
    e = EsError(400, "", "")
    e.body = lambda: {"error": f"no handler found for uri [{req.path}] and method "
                               f"[{req.method}]", "status": 400}
    return e


def _mapper(reason: str) -> EsError:
    return EsError(400, "mapper_parsing_exception", f"Failed to parse mapping: {reason}",
                   caused_by={"type": "mapper_parsing_exception", "reason": reason},
                   root_extra={})


def _list(xs) -> str:
    return "[" + ", ".join(xs) + "]"


def _overlap(p: str, q: str) -> bool:
    """Whether two index patterns can match one name (prefixes before the first *)."""
    a, b = p.split("*")[0], q.split("*")[0]
    if "*" not in p and "*" not in q:
        return p == q
    if "*" not in p:
        return fnmatch.fnmatchcase(p, q)
    if "*" not in q:
        return fnmatch.fnmatchcase(q, p)
    return a.startswith(b) or b.startswith(a)


def _flat_settings(s: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in s.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_settings(v, key + "."))
        else:
            out[key if key.startswith("index.") else f"index.{key}"] = v
    return out


def _merge(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


def _check_index_name(index: str) -> None:
    why = None
    if index != index.lower():
        why = "must be lowercase"
    elif any(c in _BAD_INDEX_CHARS for c in index):
        why = 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    elif index[0] in "-_+":
        why = "must not start with '_', '-', or '+'"
    elif len(index.encode()) > 255:
        why = "index name is too long"
    if why:
        raise EsError(400, "invalid_index_name_exception", f"Invalid index name [{index}], "
                      f"{why}", extra={"index_uuid": "_na_", "index": index})


def _dynamic(v) -> dict:
    if isinstance(v, list):
        v = next((x for x in v if x is not None), "")
    if isinstance(v, bool):
        return {"type": "boolean"}
    if isinstance(v, int):
        return {"type": "long"}
    if isinstance(v, float):
        return {"type": "float"}
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


def _date_ns(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return int(v) * 1_000_000
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v) * 1_000_000
    m = _ISO.match(str(v))
    if not m:
        return None
    import calendar
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo or 1), int(d or 1), int(hh or 0), int(mi or 0),
                                int(ss or 0), 0, 0, 0))
        import datetime as dt
        dt.date(int(y), int(mo or 1), int(d or 1))
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60)
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def _matches(query: dict | None, _id: str, src: dict) -> bool:
    if not query or "match_all" in query:
        return True
    if "ids" in query:
        return _id in query["ids"].get("values", [])
    if "terms" in query:
        (field, vals), = query["terms"].items()
        got = _get(src, field)
        return any(v in got for v in vals) if isinstance(got, list) else got in vals
    if "term" in query:
        (field, val), = query["term"].items()
        if isinstance(val, dict):
            val = val.get("value")
        got = _get(src, field)
        return val in got if isinstance(got, list) else got == val
    if "bool" in query:
        b = query["bool"]
        return all(_matches(q, _id, src) for q in b.get("filter", []) + b.get("must", [])) \
            and not any(_matches(q, _id, src) for q in b.get("must_not", []))
    raise EsError(400, "parsing_exception", f"unknown query [{next(iter(query))}]")


def _get(src: dict, field: str):
    if field in src:
        return src[field]
    node: Any = src
    parts = field.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, dict):
            return None
        for j in range(len(parts), i, -1):          # longest dotted key first
            k = ".".join(parts[i:j])
            if k in node:
                node, i = node[k], j
                break
        else:
            return None
    return node


def _col(raw: str, full: str) -> int:
    key = json.dumps(full.rsplit(".", 1)[-1])
    pos = raw.find(key)
    return (pos + len(key) + 2) if pos >= 0 else 1


def _preview(v) -> str:
    if isinstance(v, dict):
        s = "{" + ", ".join(f"{k}={x}" for k, x in v.items()) + "}"
    elif isinstance(v, bool):
        s = "true" if v else "false"
    else:
        s = str(v)
    return s if len(s) <= 20 else s[:20] + "..."


__all__ = ["EsError", "FakeElasticsearch", "Request"]
