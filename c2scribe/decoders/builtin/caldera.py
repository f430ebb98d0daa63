"""caldera: MITRE Caldera agents over HTTP, Sandcat (Go) and Ragdoll (Python): one family.

Protocol (as seen on the wire). The agent POSTs a beacon: base64 of a JSON profile (``paw`` =
agent id, empty or absent on the first beacon, ``host``, ``platform``, ``username`` ...) with
``results``: [{``id`` (link id), ``output`` (base64 of the output bytes, or of a JSON object
with stdout/stderr/exit_code), ``status``, ``pid``}]. The server answers with base64 of JSON
{``paw`` (assigned on registration), ``sleep``, ``watchdog``, ``instructions``}; instructions is
a JSON string holding a list of JSON strings, one instruction each: ``id`` (link id),
``command`` (base64), ``executor``, ``timeout``, ``payloads``, ``uploads``, ``deadman``.
Payloads come from ``/file/download`` (headers ``file``, ``platform``; answer = the bytes) and
exfiltration goes to ``/file/upload`` (multipart, ``X-Request-ID: <host>-<paw>``).

- Sandcat: ``POST /beacon`` (Go-http-client/1.1 by default); the answer is the bare base64.
- Ragdoll: ``POST /weather`` (python-requests). Same request body, same answer envelope and
  instruction objects, but the base64 envelope is hidden in an HTML "weather" page, inside
  ``<p id="instructions">``. Same family, so it is a second class here (``caldera-ragdoll``).

Detection (``want``): method and the last segment of the URL path (``head.path``, so absolute-URI
requests between proxies work too): ``/beacon`` resp. ``/weather``, plus ``/file/download``
and ``/file/upload`` for both; never IP addresses. Bodies that are not the envelope become
"error" messages, never exceptions. Running both decoders on one capture reports the file
endpoints twice.

Messages: beacon -> "checkin" (agent = paw; on registration, the paw the server assigned),
each result -> "output", each instruction -> "command" (command_id = link id, pairs the two),
/file/download -> "download" (the file as attachment, named from the ``file`` header; a cut
body is kept and flagged ``partial``), /file/upload -> "upload".

Reference captures: corelight-zeek-caldera-detector testing/Traces/sandcat.pcap (58 beacons on
one keep-alive connection, 23 links, sandcat.go download cut short) and ragdoll.pcap (10
/weather beacons on separate connections, 5 links, one 404 upload).
"""
from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import re

from c2scribe.decoders.api import (TO_IMPLANT, TO_OPERATOR, Attachment, HttpDecoder, Message,
                                   safe_filename)

_HTML_ENVELOPE = re.compile(rb"""id=["']?instructions["']?[^>]*>\s*([A-Za-z0-9+/=\s]+?)\s*<""")


def _unb64(s) -> bytes | None:
    try:
        return base64.b64decode(s, validate=False) if s else b""
    except (binascii.Error, ValueError, TypeError):
        return None


def _json_dict(data: bytes | None) -> dict | None:
    """base64(JSON object) -> dict; plain JSON tolerated; anything else None."""
    if not data:
        return None
    for raw in (_unb64(data.strip()), data):
        try:
            obj = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _instructions(env: dict) -> list[dict]:
    items = env.get("instructions") or []
    if isinstance(items, str):
        items = json.loads(items)
    out = []
    for it in items if isinstance(items, list) else []:
        it = json.loads(it) if isinstance(it, str) else it
        if isinstance(it, dict):
            out.append(it)
    return out


def _output(r: dict) -> tuple[str, dict]:
    """A result's output as text (undecodable bytes replaced), plus extra fields."""
    raw, extra = r.get("output"), {}
    data = _unb64(raw) if isinstance(raw, str) else None
    if data is None:
        extra["output_encoding"] = "raw"
        return (raw if isinstance(raw, str) else json.dumps(raw)), extra
    text = data.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "stdout" in obj:
            extra["exit_code"] = obj.get("exit_code")
            text = f"{obj.get('stdout') or ''}{obj.get('stderr') or ''}"
    extra["output_bytes"] = len(data)
    return text, extra


class Sandcat(HttpDecoder):
    name = "caldera-sandcat"
    version = "1.0"
    family = "caldera"
    description = "MITRE Caldera Sandcat agent: POST /beacon base64 JSON, /file/download"
    references = ("https://caldera.readthedocs.io/en/latest/plugins/sandcat/Sandcat-Details.html",)
    beacon = "beacon"

    def want(self, head):
        seg = (head.path or "").rstrip("/").rsplit("/", 1)[-1]
        method = (head.method or "").upper()
        if (head.path or "").endswith("/file/download"):
            return method in ("GET", "POST")
        return method == "POST" and (seg == self.beacon
                                     or (head.path or "").endswith("/file/upload"))

    def _envelope(self, body: bytes | None) -> dict | None:
        return _json_dict(body)

    def request(self, tx, ctx):
        path = tx.url_path or ""
        if path.endswith("/file/download"):
            return None
        if path.endswith("/file/upload"):
            return self._upload(tx)
        prof = _json_dict(tx.request_body)
        if prof is None:
            return Message("error", TO_OPERATOR, f"{path}: request body is not a Caldera beacon "
                           f"({tx.request_body_bytes} bytes)", fields={"path": path})
        paw = prof.get("paw") or None
        if not paw and tx.response_body:           # registration: the answer names the paw
            paw = (self._envelope(tx.response_body) or {}).get("paw") or None
        fields = {k: v for k, v in prof.items() if k != "results"}
        fields["registration"] = not prof.get("paw")
        who = "@".join(str(prof[k]) for k in ("username", "host") if prof.get(k)) or "?"
        msgs = [Message("checkin", TO_OPERATOR, f"beacon from {who} ({prof.get('platform')}) "
                        f"paw={paw}", agent=paw, fields=fields)]
        links = ctx.agent_state(paw or "").setdefault("links", {})
        for r in prof.get("results") or []:
            if not isinstance(r, dict):
                continue
            text, extra = _output(r)
            fields = {k: v for k, v in r.items() if k not in ("id", "output")} | extra
            if str(r.get("id")) in links:
                fields["command"] = links[str(r.get("id"))]
            msgs.append(Message("output", TO_OPERATOR, text, agent=paw,
                                command_id=str(r.get("id")), fields=fields))
        return msgs

    def response(self, tx, ctx):
        path = tx.url_path or ""
        if path.endswith("/file/download"):
            return self._download(tx)
        if path.endswith("/file/upload"):
            return None
        env = self._envelope(tx.response_body)
        if env is None:
            return Message("error", TO_IMPLANT, f"{path}: answer {tx.status_code} holds no "
                           f"instructions ({tx.response_body_bytes} bytes)",
                           fields={"path": path, "status": tx.status_code})
        paw = env.get("paw") or None
        try:
            items = _instructions(env)
        except ValueError as e:
            return Message("error", TO_IMPLANT, f"undecodable instructions: {e}", agent=paw)
        links = ctx.agent_state(paw or "").setdefault("links", {})
        msgs = []
        for it in items:
            data = _unb64(it.get("command")) if isinstance(it.get("command"), str) else None
            text = (data.decode("utf-8", "replace") if data is not None
                    else str(it.get("command", "")))
            links[str(it.get("id"))] = text
            fields = {k: v for k, v in it.items() if k not in ("id", "command")}
            fields.update(beacon_sleep=env.get("sleep"), watchdog=env.get("watchdog"))
            msgs.append(Message("command", TO_IMPLANT, text, agent=paw,
                                command_id=str(it.get("id")), fields=fields))
        return msgs

    @staticmethod
    def _download(tx):
        head = dict((k.lower(), v) for k, v in reversed(tx.request_headers or []))
        rhead = dict((k.lower(), v) for k, v in reversed(tx.response_headers or []))
        want_name = head.get("file") or ""
        if tx.status_code is None or not 200 <= tx.status_code < 300:
            return Message("error", TO_IMPLANT, f"download of {want_name!r} answered "
                           f"{tx.status_code}", agent=head.get("paw"), fields={"file": want_name})
        body = tx.response_body or b""
        try:
            expected = int(rhead.get("content-length", ""))
        except ValueError:
            expected = None
        partial = (tx.state != "complete" or bool(tx.response_body_truncated)
                   or (expected is not None and len(body) < expected))
        fields = {"file": want_name, "platform": head.get("platform"),
                  "server_filename": rhead.get("filename"), "received_bytes": len(body),
                  "expected_bytes": expected, "partial": partial, "state": tx.state}
        atts = [Attachment(safe_filename(want_name, "payload"), body)] if body else []
        return Message("download", TO_IMPLANT, f"payload {want_name} ({head.get('platform')}): "
                       f"{len(body)} bytes{' (partial)' if partial else ''}",
                       agent=head.get("paw"), fields=fields, attachments=atts)

    @staticmethod
    def _upload(tx):
        head = dict((k.lower(), v) for k, v in reversed(tx.request_headers or []))
        rid = head.get("x-request-id") or ""
        paw = rid.rsplit("-", 1)[-1] if "-" in rid else (head.get("paw") or None)
        atts = []
        try:
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + (head.get("content-type") or "").encode("latin-1")
                + b"\r\n\r\n" + (tx.request_body or b""))
            for part in msg.iter_parts() if msg.is_multipart() else []:
                data = part.get_payload(decode=True)
                if isinstance(data, bytes):
                    atts.append(Attachment(safe_filename(part.get_filename(), "upload"), data))
        except Exception as e:  # a malformed multipart body is reported, not raised
            return Message("error", TO_OPERATOR, f"undecodable upload: {e}", agent=paw)
        return Message("upload", TO_OPERATOR, f"upload {', '.join(a.name for a in atts) or '?'}"
                       f" -> {tx.status_code}", agent=paw,
                       fields={"request_id": rid, "status": tx.status_code}, attachments=atts)


class Ragdoll(Sandcat):
    name = "caldera-ragdoll"
    description = "MITRE Caldera Ragdoll agent: POST /weather, instructions hidden in HTML"
    references = ("https://caldera.readthedocs.io/en/latest/Learning-the-terminology.html",)
    beacon = "weather"

    def _envelope(self, body: bytes | None) -> dict | None:
        m = _HTML_ENVELOPE.search(body or b"")
        return _json_dict(m.group(1)) if m else _json_dict(body)
