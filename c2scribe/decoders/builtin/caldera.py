"""caldera: MITRE Caldera agents over HTTP. Sandcat (Go) and Ragdoll (Python) are one family.

Beacon: the agent POSTs base64 of a JSON profile (``paw`` = agent id, empty/absent until the
server assigns one, ``host``, ``platform`` ...) with ``results`` [{``id`` = link id, ``output``
= base64, ``status``, ``pid``}]; the answer is base64 of JSON {``paw``, ``sleep``, ``watchdog``,
``instructions``: a JSON string listing JSON-encoded instructions (``id`` = link id, ``command``
= base64, ``executor``, ``timeout``, ``payloads`` ...)}. Payloads: ``/file/download`` (headers
``file``, ``platform``; answer = the bytes); exfiltration: ``/file/upload`` (multipart,
``X-Request-ID: <host>-<paw>``).
- Sandcat (``caldera-sandcat``): ``POST /beacon``, the answer is the bare base64 envelope.
- Ragdoll (``caldera-ragdoll``): ``POST /weather``, the same body, envelope and instructions, but
  the envelope hides in an HTML "weather" page, in ``<p id="instructions">``.
Detection (``want``): method plus the end of ``head.path`` (absolute-URI requests between
proxies work; never IPs): ``/beacon`` resp. ``/weather``, plus ``/file/download`` and
``/file/upload`` for both (running both decoders reports file transfers twice). A body that is
not the envelope gives an "error" message, never an exception.
Messages: beacon -> "checkin" (agent = paw; on registration the one the answer assigns), each
result -> "output", each instruction -> "command" (command_id = link id pairs them), download
-> "download" + attachment (named after the ``file`` header; a cut body is kept, flagged
``partial``, stamped with the request time), upload -> "upload" + attachments.
Reference captures (corelight-zeek-caldera-detector testing/Traces): sandcat.pcap (58 beacons,
one keep-alive connection, 23 links; the sandcat.go download lost segments: 2.8 of 7 MB) and
ragdoll.pcap (9 /weather beacons, 4 links, 2 downloads, one upload answered 404).
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
_SPACE = re.compile(rb"\s+")
_CUT = ("", ", cut at the engine's body_keep")


def _headers(pairs) -> dict:
    return {k.lower(): v for k, v in reversed(pairs or [])}     # the first value wins


def _unb64(s) -> bytes | None:
    """Strict base64 (whitespace ignored) -> bytes, else None."""
    try:
        s = _SPACE.sub(b"", s.encode("latin-1") if isinstance(s, str) else s)
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None


def _json(raw):
    try:
        return json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return None


def _json_dict(data: bytes | None) -> dict | None:
    """base64(JSON object) -> dict; plain JSON tolerated; anything else None."""
    for obj in (_json(_unb64(data or b"")), _json(data)):
        if isinstance(obj, dict):
            return obj
    return None


def _instructions(env: dict) -> list[dict] | None:
    """The instruction objects of an answer (a JSON list of JSON strings), None if garbled."""
    items = env.get("instructions") or []
    items = _json(items) if isinstance(items, str) else items
    if not isinstance(items, list):
        return None
    items = [_json(it) if isinstance(it, str) else it for it in items]
    return None if not all(isinstance(it, dict) for it in items) else items


def _decode(value, fields: dict, key: str) -> str:
    """A base64 field as text (bad UTF-8 replaced); kept as it is when it is not base64."""
    data = _unb64(value) if isinstance(value, str) else None
    if data is None:
        fields[f"{key}_encoding"] = "raw"
        return value if isinstance(value, str) else ("" if value is None else json.dumps(value))
    fields[f"{key}_bytes"] = len(data)
    text = data.decode("utf-8", "replace")
    obj = _json(text) if text.startswith("{") else None
    if key == "output" and isinstance(obj, dict) and "stdout" in obj:   # stdout/stderr/exit_code
        fields["exit_code"] = obj.get("exit_code")
        text = f"{obj.get('stdout') or ''}{obj.get('stderr') or ''}"
    return text


def _id(obj: dict) -> str | None:
    return None if obj.get("id") is None else str(obj["id"])


class Sandcat(HttpDecoder):
    name = "caldera-sandcat"
    version = "1.0"
    family = "caldera"
    description = "MITRE Caldera Sandcat agent: POST /beacon base64 JSON, /file/download"
    references = ("https://caldera.readthedocs.io/en/latest/plugins/sandcat/Sandcat-Details.html",)
    beacon = "beacon"

    def want(self, head):
        path, method = (head.path or "").rstrip("/"), (head.method or "").upper()
        if path.endswith("/file/download"):
            return method in ("GET", "POST")
        return method == "POST" and (path.endswith("/file/upload")
                                     or path.rsplit("/", 1)[-1] == self.beacon)

    def _envelope(self, body: bytes | None) -> dict | None:
        return _json_dict(body)

    def request(self, tx, ctx):
        path = tx.url_path or ""
        if path.rstrip("/").endswith("/file/download"):
            return None
        if path.rstrip("/").endswith("/file/upload"):
            return self._upload(tx)
        prof = _json_dict(tx.request_body)
        if prof is None:
            cut = _CUT[bool(tx.request_body_truncated)]
            return Message("error", TO_OPERATOR, f"{path}: request body is not a Caldera beacon "
                           f"({tx.request_body_bytes} bytes{cut})", fields={"path": path})
        paw = prof.get("paw") or None
        if not paw and tx.response_body:           # registration: the answer names the paw
            paw = (self._envelope(tx.response_body) or {}).get("paw") or None
        fields = {k: v for k, v in prof.items() if k != "results"}
        fields["registration"] = not prof.get("paw")
        who = "@".join(str(prof[k]) for k in ("username", "host") if prof.get(k)) or "?"
        msgs = [Message("checkin", TO_OPERATOR, f"beacon from {who} ({prof.get('platform')}) "
                        f"paw={paw}", agent=paw, fields=fields)]
        links = ctx.agent_state(paw or "").setdefault("links", {})
        results = prof.get("results")
        for r in results if isinstance(results, list) else []:
            if isinstance(r, dict):
                fields = {k: v for k, v in r.items() if k not in ("id", "output")}
                text = _decode(r.get("output"), fields, "output")
                if _id(r) in links:
                    fields["command"] = links[_id(r)]
                msgs.append(Message("output", TO_OPERATOR, text, agent=paw, command_id=_id(r),
                                    fields=fields))
        return msgs

    def response(self, tx, ctx):
        path = (tx.url_path or "").rstrip("/")
        if path.endswith("/file/download"):
            return self._download(tx)
        if path.endswith("/file/upload"):
            return None
        env = self._envelope(tx.response_body)
        items = None if env is None else _instructions(env)
        if items is None:
            return Message("error", TO_IMPLANT, f"{path}: answer {tx.status_code} holds no "
                           f"instructions ({tx.response_body_bytes} bytes"
                           f"{_CUT[bool(tx.response_body_truncated)]})",
                           agent=(env or {}).get("paw"), fields={"status": tx.status_code})
        paw = env.get("paw") or None
        links = ctx.agent_state(paw or "").setdefault("links", {})
        msgs = []
        for it in items:
            fields = {k: v for k, v in it.items() if k not in ("id", "command")}
            fields.update(beacon_sleep=env.get("sleep"), watchdog=env.get("watchdog"))
            text = links[_id(it)] = _decode(it.get("command"), fields, "command")
            msgs.append(Message("command", TO_IMPLANT, text, agent=paw, command_id=_id(it),
                                fields=fields))
        return msgs

    @staticmethod
    def _download(tx):
        head, rhead = _headers(tx.request_headers), _headers(tx.response_headers)
        name, paw = head.get("file") or "", head.get("paw")
        if tx.status_code is None or not 200 <= tx.status_code < 300:
            return Message("error", TO_IMPLANT, f"download of {name!r} answered "
                           f"{tx.status_code}", agent=paw, fields={"file": name})
        body = tx.response_body or b""
        cl = (rhead.get("content-length") or "").strip()
        expected = int(cl) if cl.isdigit() else None
        # holes in the capture are zeros in the body (the engine counts them as missing)
        missing = getattr(tx, "response_missing_bytes", 0) or 0
        decoded = tx.response_body_bytes if tx.response_body_bytes is not None else len(body)
        received = decoded - missing
        partial = (tx.state != "complete" or bool(tx.response_body_truncated)  # cut or not kept
                   or missing > 0 or len(body) < decoded
                   or (expected is not None and decoded < expected))
        fields = {"file": name, "platform": head.get("platform"), "state": tx.state,
                  "server_filename": rhead.get("filename"), "received_bytes": received,
                  "missing_bytes": missing, "kept_bytes": len(body), "expected_bytes": expected,
                  "partial": partial}
        atts = [Attachment(safe_filename(name, "payload"), body)] if body else []
        return Message("download", TO_IMPLANT, f"payload {name} ({head.get('platform')}): "
                       f"{len(body)} bytes{' (partial)' if partial else ''}", agent=paw,
                       fields=fields, attachments=atts, ts_us=tx.start_us if partial else None)

    @staticmethod
    def _upload(tx):
        head = _headers(tx.request_headers)
        rid = head.get("x-request-id") or ""
        paw = rid.rsplit("-", 1)[-1] if "-" in rid else head.get("paw")
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
                       f" -> {tx.status_code}", agent=paw, attachments=atts,
                       fields={"request_id": rid, "status": tx.status_code})


class Ragdoll(Sandcat):
    name = "caldera-ragdoll"
    description = "MITRE Caldera Ragdoll agent: POST /weather, instructions hidden in HTML"
    references = ("https://caldera.readthedocs.io/en/latest/Learning-the-terminology.html",)
    beacon = "weather"

    def _envelope(self, body: bytes | None) -> dict | None:
        m = _HTML_ENVELOPE.search(body or b"")
        return _json_dict(m.group(1)) if m else _json_dict(body)
