"""http: every HTTP transaction as one transcript line, the default when no C2 decoder is named.

The "agent" is the client as far as the capture can tell: X-Forwarded-For when a proxy
names one, else the client address, so traffic seen between two proxies still groups by
the real client.
"""
from c2scribe.decoders.api import TO_OPERATOR, HttpDecoder, Message


class HttpLog(HttpDecoder):
    name = "http"
    version = "1.0"
    description = "every HTTP transaction as a transcript line"

    def response(self, tx, ctx):
        return self._line(tx)

    def request(self, tx, ctx):
        # transactions whose response never came are still worth a line
        if tx.status_code is None and tx.status_text is None:
            return self._line(tx)
        return None

    @staticmethod
    def _line(tx):
        status = (f"{tx.status_code} {tx.status_phrase or ''}".strip() if tx.status_code is not None
                  else "(no response)")
        target = tx.url_full or f"{tx.hostname or tx.dst_ip}{tx.uri or ''}"
        client = (tx.x_forwarded_for or "").split(",")[0].strip() or tx.src_ip
        return Message(kind="other", direction=TO_OPERATOR, agent=client,
                       text=f"{tx.method or '?'} {target} -> {status}",
                       fields={"request_body_bytes": tx.request_body_bytes,
                               "response_body_bytes": tx.response_body_bytes,
                               "response_body_sha256": tx.response_body_sha256,
                               "user_agent": tx.user_agent, "state": tx.state})
