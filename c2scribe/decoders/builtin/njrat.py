"""njrat: the njRAT (Bladabindi) remote access trojan's raw TCP C2, as a transcript.

Protocol: the victim connects out to the operator's server; each direction is a sequence of
frames ``<decimal length>\\0<payload>``, the payload being fields separated by ``|'|'|`` whose
first is the command: ``ll`` (check-in: base64 victim id, computer, user, install date,
country, OS, camera, version, ..., base64 active window), ``inf`` (base64 settings), ``act``
(base64 active window), ``CAP`` (screenshot: the operator asks with a size, the victim answers
with JPEG bytes), ``kl`` (keylog), ``rn``/``Ex``/``PLG``/``up`` (files and plugins) ...

Detection: a connection is followed when its first bytes are a length (1-9 digits), a NUL and
a payload that starts with a known command or holds ``|'|'|`` within its first 64 bytes.
Frames are reassembled per direction (bounded at 32 MiB); a length that is not a decimal
number, or too big, gives one error message and that direction is no longer decoded. Bytes
missing from the capture (a chunk's ``gap_before``) give one error message; the frame they
cut is lost and decoding resumes at the next plausible frame (a length, a NUL, and a known
command or a field separator).

Agent: the victim id of the ``ll`` check-in (e.g. ``HacKed_C4BA3647``), the client address
before it. Every message keeps the payload's length and SHA-256 in ``fields``; binary fields
(the screenshot JPEG, files) become attachments.

Reference capture: keithjjones/zeek-njrat-detector, testing/Traces/njrat.pcap, with the Zeek
transcript testing/Baseline/tests.trace/njrat.log.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

from c2scribe.decoders.api import TO_IMPLANT, TO_OPERATOR, Attachment, Message, StreamDecoder

SEP = b"|'|'|"
MAX_FRAME = 32 * 1024 * 1024
MAX_DIGITS = 9
COMMANDS = {  # command -> what it is (public descriptions of njRAT 0.7d)
    "ll": "check-in", "inf": "settings", "act": "active window", "CAP": "screenshot",
    "kl": "keylog", "rn": "run file", "Ex": "execute plugin", "PLG": "plugin", "pl": "plugin",
    "un": "uninstall/restart/close", "up": "update", "RG": "registry", "prof": "stored value",
    "ret": "plugin result", "P": "ping", "MSG": "message box", "CAM": "webcam", "nwpr": "open",
    "proc": "processes", "srv": "services", "inv": "invoke plugin", "Err": "error",
}
LL_FIELDS = ("victim", "computer", "user", "install_date", "country", "os", "camera",
             "version", "extra", "active_window")
_HEAD = re.compile(rb"(\d{1,9})\0")
_B64 = re.compile(rb"[A-Za-z0-9+/]{8,}={0,2}")


def _text(b: bytes) -> str | None:
    """b as text when it is UTF-8 made of printable characters (and CR, LF, TAB), else None."""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if all(c.isprintable() or c in "\r\n\t" for c in s) else None


def _b64text(b: bytes) -> str | None:
    """The text a base64 field decodes to (trailing NULs dropped), else None."""
    if len(b) % 4 or not _B64.fullmatch(b):
        return None
    try:
        return _text(base64.b64decode(b, validate=True).rstrip(b"\0"))
    except (binascii.Error, ValueError):
        return None


def _show(s: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


class NjRat(StreamDecoder):
    name = "njrat"
    version = "1.0"
    family = "njRAT"
    description = "njRAT (Bladabindi) raw TCP C2: length\\0cmd|'|'|field... frames"
    references = ("https://github.com/keithjjones/zeek-njrat-detector",)

    def __init__(self):
        self.buf = {"client_to_server": bytearray(), "server_to_client": bytearray()}
        self.pos = {"client_to_server": 0, "server_to_client": 0}   # stream bytes consumed
        self.dead: set[str] = set()
        self.resync: set[str] = set()      # after a gap: looking for the next frame
        self.agent: str | None = None

    def want(self, head) -> bool:
        m = _HEAD.match(head.first)
        if not m:
            return False
        payload = head.first[m.end():m.end() + int(m.group(1))]
        cmd = payload.split(SEP, 1)[0]
        return SEP in payload[:64 + len(SEP)] or (len(payload) == int(m.group(1))
                                                  and cmd.decode("latin-1") in COMMANDS)

    def data(self, chunk, ctx):
        d = chunk.direction
        if d in self.dead or d not in self.buf:
            return None
        if self.agent is None:
            self.agent = chunk.src_ip          # the victim, until its check-in names it
        buf = self.buf[d]
        out = []
        if getattr(chunk, "gap_before", 0):
            out.append(Message(
                kind="error", direction=self._dir(d), agent=self.agent,
                text=f"njRAT: {chunk.gap_before} bytes of {d} are missing from the capture "
                     f"before stream byte {chunk.stream_offset}" + (
                         f"; the frame in progress ({len(buf)} bytes) is lost" if buf else "")
                     + "; decoding resumes at the next frame",
                fields={"stream_direction": d, "stream_offset": chunk.stream_offset,
                        "missing_bytes": chunk.gap_before}))
            buf.clear()
            self.pos[d] = chunk.stream_offset
            self.resync.add(d)
        buf += chunk.data
        if d in self.resync:
            start = self._next_frame(buf)
            if start is None:                  # none yet: keep what may begin one
                keep = MAX_DIGITS + 1 + 64 + len(SEP)
                self.pos[d] += max(0, len(buf) - keep)
                del buf[:max(0, len(buf) - keep)]
                return out
            self.pos[d] += start
            del buf[:start]
            self.resync.discard(d)
        while buf:
            nul = buf.find(b"\0", 0, MAX_DIGITS + 1)
            if nul < 0 and len(buf) <= MAX_DIGITS and bytes(buf).isdigit():
                break                          # the length is still arriving
            head = bytes(buf[:nul]) if nul >= 0 else bytes(buf[:16])
            if nul < 0 or not head.isdigit():
                return out + [self._stop(d, f"length field {head[:16]!r} is not a decimal "
                                            f"number of at most {MAX_DIGITS} digits")]
            n = int(head)
            if n > MAX_FRAME:
                return out + [self._stop(d, f"frame of {n} bytes exceeds the "
                                            f"{MAX_FRAME} byte cap")]
            if len(buf) < nul + 1 + n:
                break
            payload = bytes(buf[nul + 1:nul + 1 + n])
            del buf[:nul + 1 + n]
            self.pos[d] += nul + 1 + n
            out.append(self._message(d, payload, ctx))
        return out

    def close(self, ctx):
        return [Message(kind="error", direction=self._dir(d), agent=self.agent,
                        text=f"njRAT: connection ended inside a frame ({len(b)} bytes of "
                             f"{d} left undecoded at stream byte {self.pos[d]})",
                        fields={"stream_direction": d, "stream_offset": self.pos[d]})
                for d, b in self.buf.items() if b and d not in self.dead | self.resync]

    @staticmethod
    def _next_frame(buf: bytearray) -> int | None:
        """Where the first plausible frame starts in buf (None: none seen yet)."""
        for m in _HEAD.finditer(buf):
            n = int(m.group(1))
            payload = bytes(buf[m.end():m.end() + min(n, 64 + len(SEP))])
            cmd = payload.split(SEP, 1)[0].decode("latin-1")
            if n and (SEP in payload or (cmd in COMMANDS and len(payload) >= min(n, len(cmd) + 1)
                                         and (n == len(cmd) or payload[len(cmd):len(cmd) + 1]
                                              in (b"", SEP[:1])))):
                return m.start()
        return None

    @staticmethod
    def _dir(d: str) -> str:
        return TO_OPERATOR if d == "client_to_server" else TO_IMPLANT

    def _stop(self, d: str, why: str) -> Message:
        self.dead.add(d)
        self.buf[d].clear()
        return Message(kind="error", direction=self._dir(d), agent=self.agent,
                       text=f"njRAT: {why} at {d} stream byte {self.pos[d]}: not njRAT or "
                            "desynchronised, this direction is no longer decoded",
                       fields={"stream_direction": d, "stream_offset": self.pos[d]})

    def _message(self, d: str, payload: bytes, ctx) -> Message:
        parts = payload.split(SEP)
        cmd = parts[0].decode("utf-8", "replace")
        args = parts[1:]
        for i, a in enumerate(args):           # a binary field runs to the end of the frame:
            if _text(a) is None:               # its bytes may hold the separator
                args[i:] = [SEP.join(args[i:])]
                break
        if args and args[-1] == b"":
            args = args[:-1]                   # a trailing separator ends some commands
        fields = {"command": cmd, "payload_len": len(payload),
                  "payload_sha256": hashlib.sha256(payload).hexdigest()}
        if cmd == "ll" and d == "client_to_server" and args:  # the agent key
            victim = _b64text(args[0]) or args[0].decode("utf-8", "replace")
            self.agent = victim or self.agent
        state = ctx.agent_state(self.agent)
        shown, attachments = [], []
        is_ll = cmd == "ll" and d == "client_to_server"
        for i, a in enumerate(args):     # ll: only the victim id and window are base64
            t = _b64text(a) if not is_ll or i in (0, 9) else None
            t = t if t is not None else _text(a)
            if t is None:                      # binary: a screenshot, a file, a plugin
                state["files"] = state.get("files", 0) + 1
                name = (f"screenshot-{state['files']}.jpg" if cmd == "CAP"
                        and a[:3] == b"\xff\xd8\xff" else f"{cmd}-{state['files']}.bin")
                attachments.append(Attachment(name, a))
                t = f"<{len(a)} bytes, attached as {attachments[-1].name}>"
            shown.append(_show(t))
        if is_ll:
            info = dict(zip(LL_FIELDS, shown))
            info.update({f"field{i + 1}": v for i, v in enumerate(shown) if i >= len(LL_FIELDS)})
            fields.update(info)
            state.update(info, checkins=state.get("checkins", 0) + 1)
            text = "check-in: " + "; ".join(f"{k}={v}" for k, v in info.items() if v)
        else:
            what = COMMANDS.get(cmd)
            text = _show(cmd) + (f" ({what})" if what else "") + (
                ": " + " | ".join(shown) if shown else "")
        kind = ("checkin" if cmd == "ll" else "output") if d == "client_to_server" else "command"
        return Message(kind=kind, direction=self._dir(d), text=text, agent=self.agent,
                       fields=fields, attachments=attachments)
