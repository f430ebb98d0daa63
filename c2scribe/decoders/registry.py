"""Finding decoders: built-in ones, those other packages install, and files given by path.

Other packages register a decoder class under the entry-point group ``c2scribe.decoders``
(``name = "module:Class"``). ``--decoder path/to/file.py`` loads the one Decoder subclass the
file defines. Every decoder is validated when loaded, with an error naming it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from importlib.metadata import entry_points
from pathlib import Path

from ..errors import ConfigError
from .api import Decoder, HttpDecoder, StreamDecoder

ENTRY_POINT_GROUP = "c2scribe.decoders"

BUILTIN = {
    "http": "c2scribe.decoders.builtin.http:HttpLog",
    "njrat": "c2scribe.decoders.builtin.njrat:NjRat",
    "caldera-sandcat": "c2scribe.decoders.builtin.caldera:Sandcat",
    "caldera-ragdoll": "c2scribe.decoders.builtin.caldera:Ragdoll",
}

_HOOKS = {HttpDecoder: {"want": 1, "request": 2, "response": 2},
          StreamDecoder: {"want": 1, "data": 2, "close": 1}}


class DecoderValidationError(ConfigError):
    """A decoder that cannot work: named, with what is wrong."""


def validate(cls, origin: str) -> type[Decoder]:
    if not (inspect.isclass(cls) and issubclass(cls, (HttpDecoder, StreamDecoder))):
        raise DecoderValidationError(f"{origin}: {cls!r} is not a HttpDecoder or StreamDecoder "
                                     "subclass")
    if not isinstance(cls.name, str) or not cls.name:
        raise DecoderValidationError(f"{origin}: {cls.__name__}.name must be a non-empty str")
    if not isinstance(cls.version, str) or not cls.version:
        raise DecoderValidationError(f"{origin}: {cls.__name__}.version must be a str like '1.0'")
    base = HttpDecoder if issubclass(cls, HttpDecoder) else StreamDecoder
    for hook, nargs in _HOOKS[base].items():
        fn = getattr(cls, hook)
        try:
            sig = inspect.signature(fn)
            sig.bind(None, *([None] * nargs))
        except (TypeError, ValueError):
            raise DecoderValidationError(
                f"{origin}: {cls.__name__}.{hook} must take (self, {', '.join(['arg'] * nargs)})"
            ) from None
    return cls


def _load_ref(ref: str, origin: str) -> type[Decoder]:
    mod, _, attr = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise DecoderValidationError(f"{origin}: cannot load {ref}: {e}") from None
    return validate(obj, origin)


def load_file(path: str) -> type[Decoder]:
    """The one Decoder subclass defined in a Python file."""
    p = Path(path)
    if not p.is_file():
        raise DecoderValidationError(f"{path}: no such decoder file")
    spec = importlib.util.spec_from_file_location(f"c2scribe_user_decoder_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise DecoderValidationError(f"{path}: importing it failed: {type(e).__name__}: {e}") \
            from None
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, (HttpDecoder, StreamDecoder))
             and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise DecoderValidationError(f"{path}: must define exactly one HttpDecoder or "
                                     f"StreamDecoder subclass (found {len(found)})")
    return validate(found[0], path)


def available() -> dict[str, tuple[str, str]]:
    """name -> (module:Class reference, where it comes from): built-ins, then entry points."""
    out = {name: (ref, "built-in") for name, ref in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, (ep.value, f"package {ep.dist.name if ep.dist else '?'}"))
    return out


def load(spec: str) -> type[Decoder]:
    """A decoder by name (built-in or installed) or by path to a .py file."""
    if spec.endswith(".py") or "/" in spec:
        return load_file(spec)
    known = available()
    if spec not in known:
        raise DecoderValidationError(f"unknown decoder {spec!r}; known: {', '.join(sorted(known))}"
                                     " (or give a path to a .py file)")
    ref, origin = known[spec]
    return _load_ref(ref, f"{spec} ({origin})")
