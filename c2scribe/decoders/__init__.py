"""C2 decoders: the plugin API (api), discovery (registry), and the runner.

Write a decoder by subclassing HttpDecoder or StreamDecoder (see docs/decoders.md, or run
`c2scribe new-decoder NAME`).
"""
from .api import (TO_IMPLANT, TO_OPERATOR, Attachment, ConnectionHead, Context, Decoder,
                  HttpDecoder, Message, RequestHead, StreamDecoder, safe_filename)
from .registry import available, load
from .runner import DecoderRunner

__all__ = [
    "Attachment", "ConnectionHead", "Context", "Decoder", "DecoderRunner", "HttpDecoder",
    "Message", "RequestHead", "StreamDecoder", "TO_IMPLANT", "TO_OPERATOR", "available", "load",
    "safe_filename",
]
