"""Elasticsearch sink: c2scribe records -> ECS documents in dated indices, with the official
Python client (``elasticsearch`` 8.13+ or 9.x; ``pip install 'c2scribe[es]'``).

Plain Python, no Beam. What a run does, and who calls what:

- the driver, once, before any work: :func:`prepare` (= :func:`check_cluster`, which fails fast
  with :class:`ClusterUnavailable` and a clear message when the cluster cannot be reached, the
  credentials are refused, or the server is not Elasticsearch 8.x/9.x; then
  :func:`install_templates`). It returns the :class:`EsConfig` to hand to the workers (it
  carries the server's major version, so workers need no extra round trip);
- each worker, per unit: ``Indexer(config, sensor=..., unit=...)``, then ``add(record)`` for
  each record (or ``index_records(records)``), then ``close()`` -> :class:`IndexResult`;
- ``c2scribe index OUTPUT_DIR``: :func:`index_output` reads the pipeline's Parquet (or jsonl)
  datasets back into records and indexes them the same way (:func:`run_index_command`).

Documents, ``_id`` and index names come from :mod:`c2scribe.ecs`: a re-run or a backfill
overwrites documents, it never duplicates them.

Bulk: ``elasticsearch.helpers.streaming_bulk`` with ``raise_on_error=False``; whole requests
and items answered 429/502/503/504 are retried with exponential back-off (``max_retries``,
``initial_backoff``, ``max_backoff``), and so is a connection that fails. Every item's result
is inspected: a document rejected for good (a 4xx other than 429: a value that does not fit
the mapping, ...) goes to the dead-letter file, one JSON line with the reason and the
document, and is counted; the others go on. When the cluster stays unreachable or overloaded
after the retries, the indexer stops cleanly: it sends nothing more, counts what it did not
send, and says why (``IndexResult.stopped``/``reason``); it does not raise, so whatever the
caller writes alongside (Parquet) is not disturbed.

Secrets (API key, password, credentials in the URL) are never printed or logged: the config's
repr hides them, the URL is shown without its userinfo.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Any, Iterable

from c2scribe import ecs
from c2scribe.errors import C2ScribeError
from c2scribe.outputs import PART_FILE, output_files
from c2scribe.schema import Record

#: statuses that mean "the cluster is busy or away", not "this document is wrong"
TRANSIENT = (429, 502, 503, 504)
ENV = {"url": "C2SCRIBE_ES_URL", "api_key": "C2SCRIBE_ES_API_KEY", "user": "C2SCRIBE_ES_USER",
       "password": "C2SCRIBE_ES_PASSWORD", "ca_certs": "C2SCRIBE_ES_CA_CERTS"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class EsError(C2ScribeError):
    """Something about Elasticsearch the caller must act on."""


class ClusterUnavailable(EsError):
    """The cluster cannot be used: unreachable, credentials refused, not Elasticsearch 8/9."""


# --------------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class EsConfig:
    """Where and how to index; picklable (hand it to workers). Secrets stay out of repr."""
    url: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    index_prefix: str = ecs.DEFAULT_PREFIX
    #: JSON-lines file for rejected documents; "{unit}" in it is replaced by the unit id
    dead_letter: str | None = None
    chunk_size: int = 500
    max_chunk_bytes: int = 10 << 20
    #: bulk retries of 429/502/503/504 and of connection failures, with doubling back-off
    max_retries: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    #: retries inside the client's transport (per HTTP request)
    transport_retries: int = 2
    request_timeout: float = 60.0
    connect_timeout: float = 10.0
    body_limit: int = ecs.BODY_LIMIT
    shards: int = 1
    #: set by check_cluster/prepare: the server's major version (8 or 9)
    server_major: int | None = None

    def __post_init__(self):
        url, user, password = _split_userinfo(self.url)
        if user is not None:
            object.__setattr__(self, "url", url)
            if self.user is None and self.api_key is None:
                object.__setattr__(self, "user", user)
                object.__setattr__(self, "password", password)
        if not re.match(r"^https?://[^/]+", self.url):
            raise EsError(f"the Elasticsearch URL must look like https://HOST:9200, not "
                          f"{redact_url(self.url)!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.index_prefix):
            raise EsError(f"index prefix must be lower case letters, digits, '.', '_' or '-': "
                          f"{self.index_prefix!r}")

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def dead_letter_path(self, unit: str | None = None) -> str | None:
        if not self.dead_letter:
            return None
        return self.dead_letter.replace("{unit}", unit or "all")


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    p = urllib.parse.urlsplit(url)
    if p.username is None and p.password is None:
        return url, None, None
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{p.port}" if p.port else "")
    return (urllib.parse.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment)),
            urllib.parse.unquote(p.username or ""), urllib.parse.unquote(p.password or ""))


def redact_url(url: str) -> str:
    """The URL without user and password (for messages and logs)."""
    try:
        p = urllib.parse.urlsplit(url)
        if "@" not in p.netloc:
            return url
        return urllib.parse.urlunsplit((p.scheme, "***@" + p.netloc.rsplit("@", 1)[1],
                                        p.path, p.query, p.fragment))
    except ValueError:
        return "(unparsable URL)"


def add_arguments(parser, *, url_required: bool = False) -> None:
    """The Elasticsearch options (argparse), for `c2scribe index` and `c2scribe run`."""
    g = parser.add_argument_group(
        "Elasticsearch", "secrets are best given in the environment: "
        + ", ".join(ENV.values()))
    g.add_argument("--es-url", required=url_required, default=None, metavar="URL",
                   help=f"cluster URL, e.g. https://es.example.org:9200 (${ENV['url']})")
    g.add_argument("--es-api-key", default=None, metavar="KEY",
                   help=f"API key: the encoded key, or ID:KEY (${ENV['api_key']})")
    g.add_argument("--es-user", default=None, help=f"basic auth user (${ENV['user']})")
    g.add_argument("--es-password", default=None,
                   help=f"basic auth password (${ENV['password']})")
    g.add_argument("--es-ca-certs", default=None, metavar="PEM",
                   help=f"CA bundle to verify the cluster's certificate (${ENV['ca_certs']})")
    g.add_argument("--es-insecure", action="store_true",
                   help="do not verify the cluster's TLS certificate (never in production)")
    g.add_argument("--es-index-prefix", default=ecs.DEFAULT_PREFIX, metavar="PREFIX",
                   help="index names: PREFIX-<dataset>-YYYY.MM (default c2scribe)")
    g.add_argument("--es-max-retries", type=int, default=5, metavar="N",
                   help="bulk retries on 429/503 and lost connections (default 5)")
    g.add_argument("--es-backoff", type=float, default=1.0, metavar="SECONDS",
                   help="first retry delay, doubled each time up to 30 s (default 1)")
    g.add_argument("--es-chunk-size", type=int, default=500, metavar="DOCS",
                   help="documents per bulk request (default 500)")


def config_from_args(args, environ: dict | None = None, **overrides) -> EsConfig | None:
    """The config from parsed options, falling back on the environment; None without a URL."""
    env = os.environ if environ is None else environ

    def pick(name: str):
        v = getattr(args, f"es_{name}", None)
        return v if v not in (None, "") else (env.get(ENV[name]) or None)

    url = pick("url")
    if not url:
        return None
    kw: dict[str, Any] = dict(
        url=url, api_key=pick("api_key"), user=pick("user"), password=pick("password"),
        ca_certs=pick("ca_certs"), verify_certs=not getattr(args, "es_insecure", False),
        index_prefix=getattr(args, "es_index_prefix", None) or ecs.DEFAULT_PREFIX,
        max_retries=getattr(args, "es_max_retries", 5),
        initial_backoff=getattr(args, "es_backoff", 1.0),
        chunk_size=getattr(args, "es_chunk_size", 500))
    kw.update(overrides)
    return EsConfig(**kw)


# --------------------------------------------------------------------------------- client

def client_major() -> int:
    import elasticsearch
    return int(elasticsearch.__versionstr__.split(".")[0])


_TRANSPORTS: dict[int, type] = {}


def _transport_class(server_major: int | None):
    """The client's transport, or one that asks for `compatible-with=<server major>` when the
    server is older than the client (the 9.x client asks for 9, which 8.x servers refuse)."""
    from elastic_transport import Transport
    if server_major is None or server_major >= client_major():
        return Transport
    cls = _TRANSPORTS.get(server_major)
    if cls is None:
        sub = f"compatible-with={server_major}"

        class CompatTransport(Transport):
            def perform_request(self, method, target, *, headers=None, **kw):
                if headers:
                    from elastic_transport import HttpHeaders
                    headers = HttpHeaders(headers)
                    for h in ("accept", "content-type"):
                        v = headers.get(h)
                        if v and "compatible-with=" in v:
                            headers[h] = re.sub(r"compatible-with=\d+", sub, v)
                    return super().perform_request(method, target, headers=headers, **kw)
                return super().perform_request(method, target, **kw)

        CompatTransport.__name__ = f"CompatTransport{server_major}"
        cls = _TRANSPORTS[server_major] = CompatTransport
    return cls


def _supported(kwargs: dict) -> dict:
    import inspect
    from elasticsearch import Elasticsearch
    params = inspect.signature(Elasticsearch.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _auth_header(config: EsConfig) -> dict[str, str]:
    """The Authorization header the client sends (for requests made below the client)."""
    import base64
    if config.api_key:
        key = config.api_key.strip()
        if ":" in key:
            key = base64.b64encode(key.encode()).decode()
        return {"authorization": f"ApiKey {key}"}
    if config.user is not None:
        cred = f"{config.user}:{config.password or ''}".encode()
        return {"authorization": f"Basic {base64.b64encode(cred).decode()}"}
    return {}


def make_client(config: EsConfig, *, server_major: int | None = None,
                max_retries: int | None = None, timeout: float | None = None):
    """An ``elasticsearch.Elasticsearch`` client for the config."""
    from elasticsearch import Elasticsearch
    kw: dict[str, Any] = {
        "request_timeout": timeout if timeout is not None else config.request_timeout,
        "max_retries": config.transport_retries if max_retries is None else max_retries,
        "retry_on_status": TRANSIENT, "retry_on_timeout": True,
        "retry_backoff_base": max(config.initial_backoff / 2, 0.001),
        "retry_backoff_cap": max(config.initial_backoff * 2, 0.002),
        "transport_class": _transport_class(server_major or config.server_major),
    }
    if config.api_key:
        key = config.api_key.strip()
        kw["api_key"] = tuple(key.split(":", 1)) if ":" in key else key
    elif config.user is not None:
        kw["basic_auth"] = (config.user, config.password or "")
    if config.ca_certs:
        kw["ca_certs"] = config.ca_certs
    if not config.verify_certs:
        kw["verify_certs"] = False
        kw["ssl_show_warn"] = False        # warned once, loudly, by check_cluster
    return Elasticsearch(config.url, **_supported(kw))


# ----------------------------------------------------------------------- cluster checks

@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    version: str
    major: int
    cluster_name: str | None
    flavor: str | None

    def describe(self) -> str:
        return f"Elasticsearch {self.version}" + (f" ({self.cluster_name})"
                                                  if self.cluster_name else "")


def _reason(body) -> str:
    """The reason of an Elasticsearch error body (with its cause)."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            out = f"{err.get('type', 'error')}: {err.get('reason', '')}"
            cause = err.get("caused_by")
            if isinstance(cause, dict) and cause.get("reason"):
                out += f" ({cause['reason']})"
            if err.get("additional_unsuccessful_credentials"):
                out += f" ({err['additional_unsuccessful_credentials']})"
            return out
        return str(err)
    return str(body)[:300]


_warned_insecure = False


def _warn_insecure(config: EsConfig) -> None:
    global _warned_insecure
    if not config.verify_certs and not _warned_insecure:
        _warned_insecure = True
        print(f"c2scribe: WARNING: TLS certificates of {config.display_url} are NOT verified "
              "(--es-insecure): anyone on the path can read and change what is indexed",
              file=sys.stderr)


def check_cluster(config: EsConfig) -> ClusterInfo:
    """GET / on the cluster, before any work: its version, or ClusterUnavailable saying why."""
    import importlib.util
    if importlib.util.find_spec("elasticsearch") is None:
        raise ClusterUnavailable("the Elasticsearch client is not installed: pip install "
                                 "'c2scribe[es]'")
    from elastic_transport import ConnectionError as TConnectionError
    from elastic_transport import TransportError
    _warn_insecure(config)
    where = config.display_url
    try:
        es = make_client(config, max_retries=1, timeout=config.connect_timeout)
        # straight through the transport: plain JSON media types, which every server takes
        meta, body = es.transport.perform_request(
            "GET", "/", headers={"accept": "application/json", **_auth_header(config)},
            request_timeout=config.connect_timeout)
    except TConnectionError as e:
        raise ClusterUnavailable(f"cannot reach Elasticsearch at {where}: "
                                 f"{_conn_reason(e)}") from None
    except TransportError as e:
        raise ClusterUnavailable(f"cannot reach Elasticsearch at {where}: "
                                 f"{type(e).__name__}: {e.message}") from None
    except (ValueError, OSError) as e:
        raise ClusterUnavailable(f"cannot use Elasticsearch at {where}: {e}") from None
    if meta.status == 403:
        raise ClusterUnavailable(
            f"Elasticsearch at {where} accepted the credentials but they lack a privilege "
            f"(403): {_reason(body)}; c2scribe needs the cluster privileges monitor and "
            "manage_index_templates, and create_index and index on its indices")
    if meta.status == 401:
        raise ClusterUnavailable(
            f"Elasticsearch at {where} refused the credentials ({meta.status}): "
            f"{_reason(body)}; check --es-api-key or --es-user/--es-password "
            f"(or ${ENV['api_key']}, ${ENV['user']}, ${ENV['password']})")
    if not 200 <= meta.status < 300:
        raise ClusterUnavailable(f"Elasticsearch at {where} answered {meta.status}: "
                                 f"{_reason(body)}")
    if meta.headers.get("x-elastic-product", "") != "Elasticsearch":
        raise ClusterUnavailable(f"{where} does not answer as Elasticsearch (no "
                                 "X-Elastic-Product header)")
    try:
        v = body["version"]
        number = v["number"]
        major = int(number.split(".")[0])
    except (KeyError, TypeError, ValueError):
        raise ClusterUnavailable(f"{where}: no version in the answer to GET /") from None
    if major not in (8, 9) and v.get("build_flavor") != "serverless":
        raise ClusterUnavailable(f"{where} runs Elasticsearch {number}: c2scribe needs 8.x or "
                                 "9.x")
    if major > client_major() + 1:
        raise ClusterUnavailable(f"{where} runs Elasticsearch {number}, too new for the "
                                 f"installed client {client_major()}.x")
    return ClusterInfo(number, major, body.get("cluster_name"), v.get("build_flavor"))


def _conn_reason(e) -> str:
    s = str(getattr(e, "message", "") or e)
    low = s.lower()
    if "refused" in low:
        return "connection refused"
    if "certificate" in low or "ssl" in low:
        return f"TLS failed ({s[:200]}); use --es-ca-certs PEM for a private CA"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "name or service not known" in low or "nodename nor servname" in low or \
            "failed to resolve" in low:
        return "unknown host"
    return s[:300]


def install_templates(config: EsConfig, server_major: int | None = None) -> list[str]:
    """PUT the component templates, then one composable template per dataset; the names."""
    from elasticsearch import ApiError
    es = make_client(config, server_major=server_major)
    hdrs = {"accept": "application/json", "content-type": "application/json"}
    names = []
    try:
        for kind, items in (("_component_template",
                             ecs.component_templates(config.index_prefix, config.shards)),
                            ("_index_template", ecs.index_templates(config.index_prefix))):
            for name, body in items.items():
                es.perform_request("PUT", f"/{kind}/{name}", headers=hdrs, body=body)
                names.append(name)
    except ApiError as e:
        raise EsError(f"Elasticsearch at {config.display_url} refused the template {name}: "
                      f"{_reason(e.body)}") from None
    except Exception as e:  # noqa: BLE001 - a transport error: say which template
        raise ClusterUnavailable(f"installing the templates on {config.display_url} failed "
                                 f"at {name}: {type(e).__name__}: {e}") from None
    return names


def prepare(config: EsConfig) -> tuple[EsConfig, ClusterInfo]:
    """For the driver, before any work: check the cluster, install the templates. Returns
    the config to give the workers (with the server's major version) and what was found."""
    info = check_cluster(config)
    install_templates(config, info.major)
    return dataclasses.replace(config, server_major=info.major), info


# -------------------------------------------------------------------------------- results

@dataclasses.dataclass
class IndexResult:
    """What an indexer did. documents = indexed + rejected + unsent."""
    documents: int = 0
    indexed: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    unsent: int = 0
    retries: int = 0
    stopped: bool = False
    reason: str | None = None
    by_dataset: dict = dataclasses.field(default_factory=dict)
    rejected_reasons: dict = dataclasses.field(default_factory=dict)
    dead_letter: str | None = None

    @property
    def ok(self) -> bool:
        return not self.stopped and not self.rejected and not self.unsent

    def merge(self, other: "IndexResult") -> "IndexResult":
        for f in ("documents", "indexed", "created", "updated", "rejected", "unsent",
                  "retries"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for k, v in other.by_dataset.items():
            self.by_dataset[k] = self.by_dataset.get(k, 0) + v
        for k, v in other.rejected_reasons.items():
            self.rejected_reasons[k] = self.rejected_reasons.get(k, 0) + v
        if other.stopped and not self.stopped:
            self.stopped, self.reason = True, other.reason
        self.dead_letter = self.dead_letter or other.dead_letter
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        s = (f"{self.documents} documents: {self.indexed} indexed ({self.created} new, "
             f"{self.updated} replaced), {self.rejected} rejected, {self.unsent} not sent")
        if self.by_dataset:
            s += "; " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_dataset.items()))
        return s


# -------------------------------------------------------------------------------- indexer

class _DeadLetters:
    """Rejected documents, one JSON line each, appended (one write per line)."""
    _lock = threading.Lock()

    def __init__(self, path: str | None):
        self.path = path
        self._fd: int | None = None

    def write(self, entry: dict) -> None:
        if not self.path:
            return
        line = (json.dumps(entry, ensure_ascii=True, sort_keys=True) + "\n").encode()
        with self._lock:
            if self._fd is None:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Indexer:
    """Index records of one unit of work (or of anything): add(), then close().

    ``sensor`` becomes ``observer.name`` and ``unit`` ``c2scribe.capture.unit`` (and part of
    the ``_id`` of warnings and errors); both can also be given per record. Buffers up to
    ``chunk_size`` documents, then sends them with streaming_bulk. Not thread-safe: one per
    unit (or per thread).
    """

    def __init__(self, config: EsConfig, *, sensor: str | None = None,
                 unit: str | None = None, client=None, generation: str | None = None):
        self.config = config
        self.sensor, self.unit = sensor, unit
        self.generation = generation
        self._client = client
        self._buf: list[dict] = []
        self._bytes = 0
        self.result = IndexResult(dead_letter=config.dead_letter_path(unit))
        self._dead = _DeadLetters(self.result.dead_letter)
        self._closed = False

    # ------------------------------------------------------------------------------ input
    def add(self, record, *, sensor: str | None = None, unit: str | None = None) -> None:
        """One record (a c2scribe Record, or the engine's (dataset, jsonl bytes) pair)."""
        if self._closed:
            raise ValueError("Indexer is closed")
        sensor = sensor if sensor is not None else self.sensor
        unit = unit if unit is not None else self.unit
        if isinstance(record, tuple):
            dataset, raw = record
            record = ecs.record_from_row(json.loads(raw), ecs.DATASET_CLASSES[dataset],
                                         parquet=False)
        if not isinstance(record, Record) or not record.dataset:
            raise TypeError(f"not a c2scribe record: {record!r:.100}")
        self.result.documents += 1
        if self.result.stopped:
            self.result.unsent += 1
            return
        try:
            act = ecs.action(record, sensor=sensor, unit=unit,
                             prefix=self.config.index_prefix,
                             body_limit=self.config.body_limit, generation=self.generation)
        except Exception as e:  # noqa: BLE001 - one odd record must not stop the others
            self._reject({"_index": None, "_id": None, "_source": {
                "event.dataset": record.dataset}}, None,
                {"type": "c2scribe_document_error", "reason": f"{type(e).__name__}: {e}"})
            return
        act["_dataset"] = record.dataset
        self._buf.append(act)
        # a cheap bound of the buffer's size (streaming_bulk sizes the requests exactly)
        self._bytes += 512 + sum(len(v) for v in act["_source"].values() if isinstance(v, str))
        if len(self._buf) >= self.config.chunk_size or \
                self._bytes >= self.config.max_chunk_bytes:
            self.flush()

    def index_records(self, records: Iterable, *, sensor: str | None = None,
                      unit: str | None = None) -> IndexResult:
        """Add every record (all are consumed, even after a stop), then close."""
        for r in records:
            self.add(r, sensor=sensor, unit=unit)
        return self.close()

    def flush(self) -> None:
        buf, self._buf, self._bytes = self._buf, [], 0
        if buf:
            self._send(buf)

    def close(self) -> IndexResult:
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True
                self._dead.close()
        return self.result

    def delete_stale(self) -> int:
        """After a complete, successful run of the unit: delete its documents of earlier
        generations (records a re-run no longer produces, under any index of the prefix).
        Needs `unit` and `generation`; returns how many went."""
        if not (self.unit and self.generation):
            raise ValueError("delete_stale needs the indexer's unit and generation")
        q = {"bool": {"filter": [{"term": {"c2scribe.capture.unit": self.unit}}],
                      "must_not": [{"term": {"c2scribe.capture.generation": self.generation}}]}}
        r = self.client.delete_by_query(index=f"{self.config.index_prefix}-*", query=q,
                                        conflicts="proceed", refresh=True,
                                        allow_no_indices=True, ignore_unavailable=True)
        return int(r.get("deleted", 0))

    def __enter__(self) -> "Indexer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------- sending
    @property
    def client(self):
        if self._client is None:
            major = self.config.server_major
            if major is None:
                major = check_cluster(self.config).major
                self.config = dataclasses.replace(self.config, server_major=major)
            self._client = make_client(self.config, server_major=major)
        return self._client

    def _stop(self, reason: str, pending: int) -> None:
        self.result.stopped = True
        self.result.reason = reason
        self.result.unsent += pending

    def _send(self, actions: list[dict]) -> None:
        from elastic_transport import ConnectionError as TConnectionError
        from elastic_transport import ConnectionTimeout, TransportError
        from elasticsearch.helpers import streaming_bulk
        cfg = self.config
        # (index, id) -> the actions still waiting for a result (the same record twice in
        # one batch is two actions with one key)
        pending: dict[tuple, list[dict]] = {}
        for a in actions:
            pending.setdefault((a["_index"], a["_id"]), []).append(a)
        bulk_kw = _bulk_supported(dict(
            chunk_size=cfg.chunk_size, max_chunk_bytes=cfg.max_chunk_bytes,
            raise_on_error=False, raise_on_exception=False, max_retries=cfg.max_retries,
            initial_backoff=cfg.initial_backoff, max_backoff=cfg.max_backoff, yield_ok=True,
            retry_on_status=TRANSIENT))

        helper_retries = "retry_on_status" in bulk_kw

        def left() -> int:
            return sum(len(v) for v in pending.values())

        attempt = 0
        while pending:
            try:
                client = self.client
            except ClusterUnavailable as e:
                self._stop(str(e), left())
                return
            ops = [{k: v for k, v in a.items() if k != "_dataset"}
                   for acts in pending.values() for a in acts]
            try:
                for ok, item in streaming_bulk(client, ops, **bulk_kw):
                    (_op, info), = item.items()
                    key = (info.get("_index"), info.get("_id"))
                    acts = pending.get(key)
                    if not acts:
                        continue
                    act = acts.pop(0)
                    if not acts:
                        del pending[key]
                    if ok:
                        self._indexed(act, info)
                        continue
                    exc = info.get("exception")
                    status = info.get("status")
                    if exc is not None or status in TRANSIENT:
                        # the request failed as a whole, or the cluster stayed overloaded
                        # through every retry: not this document's fault
                        body = getattr(exc, "body", None)
                        why = _reason(body) if body else str(exc or _reason(
                            {"error": info.get("error")}))
                        why = f"answered {status}: {why}"
                        if status in TRANSIENT and status != 429 and not helper_retries:
                            # a client whose bulk helper retries 429 only: retry here
                            pending.setdefault(key, []).insert(0, act)
                            raise _Transient(why)
                        self._stop(f"Elasticsearch at {cfg.display_url} {why} (after "
                                   f"{cfg.max_retries} retries)", left() + 1)
                        return
                    self._reject(act, status, info.get("error"))
                return
            except (TConnectionError, ConnectionTimeout, _Transient) as e:
                attempt += 1
                self.result.retries += 1
                if attempt > cfg.max_retries:
                    what = (f"Elasticsearch at {cfg.display_url} {e}"
                            if isinstance(e, _Transient) else
                            f"lost Elasticsearch at {cfg.display_url}: {_conn_reason(e)}")
                    self._stop(f"{what} (after {cfg.max_retries} retries)", left())
                    return
                time.sleep(min(cfg.max_backoff, cfg.initial_backoff * 2 ** (attempt - 1)))
            except TransportError as e:
                self._stop(f"Elasticsearch at {cfg.display_url} failed: "
                           f"{type(e).__name__}: {getattr(e, 'message', e)}", left())
                return

    def _indexed(self, act: dict, info: dict) -> None:
        r = self.result
        r.indexed += 1
        if info.get("result") == "created" or info.get("status") == 201:
            r.created += 1
        else:
            r.updated += 1
        ds = ecs.dataset_short(act["_dataset"])
        r.by_dataset[ds] = r.by_dataset.get(ds, 0) + 1

    def _reject(self, act: dict, status, error) -> None:
        r = self.result
        r.rejected += 1
        err = error if isinstance(error, dict) else {"type": "error", "reason": str(error)}
        key = err.get("type", "error")
        r.rejected_reasons[key] = r.rejected_reasons.get(key, 0) + 1
        src = act.get("_source") or {}
        self._dead.write({"_index": act.get("_index"), "_id": act.get("_id"),
                          "status": status, "error": err,
                          "reason": _reason({"error": err}),
                          "dataset": src.get("event.dataset"),
                          "unit": src.get("c2scribe.capture.unit"),
                          "sensor": src.get("observer.name"),
                          "document": src})


def delete_units(config: EsConfig, units: list[str], client=None) -> int:
    """Delete every document of these units (the pipeline replaced them by others)."""
    if not units:
        return 0
    client = client or make_client(config, server_major=config.server_major)
    r = client.delete_by_query(index=f"{config.index_prefix}-*",
                               query={"terms": {"c2scribe.capture.unit": list(units)}},
                               conflicts="proceed", refresh=True, allow_no_indices=True,
                               ignore_unavailable=True)
    return int(r.get("deleted", 0))


class _Transient(Exception):
    """A bulk request refused as a whole with 502/503/504, to retry."""


_BULK_PARAMS: set | None = None


def _bulk_supported(kw: dict) -> dict:
    global _BULK_PARAMS
    if _BULK_PARAMS is None:
        import inspect
        from elasticsearch.helpers import streaming_bulk
        _BULK_PARAMS = set(inspect.signature(streaming_bulk).parameters)
    return {k: v for k, v in kw.items() if k in _BULK_PARAMS}


# --------------------------------------------------------------- the pipeline's outputs

def _unit_sensors(output_dir: str) -> dict[str, str]:
    """unit id -> sensor, from OUTPUT/_status/<unit>.jsonl (the partition's sensor name is a
    sanitised copy)."""
    out: dict[str, str] = {}
    d = os.path.join(output_dir, "_status")
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        if not name.endswith(".jsonl"):
            continue
        try:
            with open(os.path.join(d, name), encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("record") == "unit" and rec.get("sensor") is not None:
                        out[rec["unit"]] = rec["sensor"]
        except (OSError, ValueError):
            continue
    return out


def output_records(output_dir: str, *, batch_size: int = 1000
                   ) -> Iterable[tuple[Record, str | None, str | None]]:
    """(record, sensor, unit) for every record of a pipeline output directory, read back
    from its Parquet (or jsonl) files, a batch at a time."""
    sensors = _unit_sensors(output_dir)
    for dataset, path, fmt, part_sensor in output_files(output_dir):
        cls = ecs.DATASET_CLASSES[dataset]
        name = os.path.basename(path)
        unit = PART_FILE.match(name).group("unit") if fmt == "parquet" else name[:-len(".jsonl")]
        sensor = sensors.get(unit, part_sensor)
        if fmt == "parquet":
            import pyarrow.parquet as pq
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    yield ecs.record_from_row(row, cls), sensor, unit
        else:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield (ecs.record_from_row(json.loads(line), cls, parquet=False),
                               sensor, unit)


def index_output(output_dir: str, config: EsConfig, *, client=None) -> IndexResult:
    """Index every record of a pipeline output directory (Parquet or jsonl) with one Indexer;
    ``config`` should come from :func:`prepare`."""
    ix = Indexer(config, client=client)
    for rec, sensor, unit in output_records(output_dir):
        ix.add(rec, sensor=sensor, unit=unit)
    return ix.close()


#: the name the task gave it
index_parquet = index_output


def run_index_command(args, out=None) -> int:
    """`c2scribe index OUTPUT_DIR --es-url URL`: exit 0 all indexed, 1 some documents
    rejected or not sent (the cluster went away), 2 usage errors and a cluster that cannot
    be used at the start (nothing was sent)."""
    out = out or sys.stderr
    output_dir = args.output_dir
    if not os.path.isdir(output_dir):
        print(f"c2scribe index: {output_dir} is not a directory (the --output of "
              "`c2scribe run`)", file=out)
        return EXIT_USAGE
    try:
        config = config_from_args(args)
    except EsError as e:
        print(f"c2scribe index: {e}", file=out)
        return EXIT_USAGE
    if config is None:
        print(f"c2scribe index: no Elasticsearch URL: give --es-url or set ${ENV['url']}",
              file=out)
        return EXIT_USAGE
    dead = args.dead_letter or os.path.join(output_dir, "_elasticsearch", "dead-letter.jsonl")
    config = dataclasses.replace(config, dead_letter=dead)
    if not output_files(output_dir):
        print(f"c2scribe index: no dataset files under {output_dir}", file=out)
        return EXIT_USAGE
    t0 = time.monotonic()
    try:
        config, info = prepare(config)
    except EsError as e:
        print(f"c2scribe index: {e}", file=out)
        return EXIT_USAGE
    print(f"c2scribe index: {output_dir} -> {config.display_url} ({info.describe()}), "
          f"indices {config.index_prefix}-<dataset>-YYYY.MM", file=out)
    result = index_output(output_dir, config)
    print(f"c2scribe index: {result.summary()} in {time.monotonic() - t0:.1f}s", file=out)
    if result.rejected:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected_reasons.items()))
        print(f"c2scribe index: {result.rejected} document(s) rejected ({reasons}); they are "
              f"in {result.dead_letter}", file=out)
    if result.stopped:
        print(f"c2scribe index: stopped: {result.reason}. {result.unsent} document(s) were "
              "not sent; the Parquet output is untouched: run `c2scribe index` again once "
              "the cluster is back (documents already indexed are replaced, not doubled)",
              file=out)
    return EXIT_OK if result.ok else EXIT_FAILED


__all__ = ["ClusterInfo", "ClusterUnavailable", "ENV", "EsConfig", "EsError", "IndexResult",
           "Indexer", "add_arguments", "check_cluster", "config_from_args",
           "index_output", "index_parquet", "install_templates", "make_client",
           "output_files", "output_records", "prepare", "redact_url", "run_index_command"]
