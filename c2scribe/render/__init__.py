"""Sinks that show records to people (text) or to programs (jsonl). Rendering only."""
from .jsonl import JsonlWriter
from .text import TextWriter

__all__ = ["JsonlWriter", "TextWriter"]
