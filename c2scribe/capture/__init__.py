"""Capture reading: files (plain, gzip, zstd ...) in, byte chunks out for the engine.

The pcap/pcapng parsing and link-layer normalisation live in C (capture.h, pcapfile.c,
linktype.c) so that no Python code runs per packet; this package opens and decompresses
files and drives a chain of them through an engine.
"""
from .files import compression_of, read_chunks
from .chain import run_chain

__all__ = ["compression_of", "read_chunks", "run_chain"]
