"""Options of `c2scribe run`: a PipelineOptions subclass, so runner flags pass through."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from c2scribe.engine import ENGINES, TCP_POLICIES


def _size(text: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = str(text).strip().lower().rstrip("b").rstrip("i")
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def _window(text: str) -> float | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    return float(text)


PARQUET_CODECS = ("zstd", "snappy", "lz4", "gzip", "brotli", "none")


def parquet_settings(fmt: str, codec: str | None, level: int | None) -> dict:
    """--compression and --compression-level checked: the Parquet writer's arguments (none
    given: {}). ValueError with the reason."""
    if codec is None and level is None:
        return {}
    if fmt != "parquet":
        raise ValueError("--compression and --compression-level are for --format parquet")
    codec = codec or "zstd"
    if level is not None:
        import pyarrow as pa
        if codec == "none" or not pa.Codec.supports_compression_level(codec):
            raise ValueError(f"--compression {codec} has no level")
        lo, hi = pa.Codec.minimum_compression_level(codec), \
            pa.Codec.maximum_compression_level(codec)
        if not lo <= level <= hi:
            raise ValueError(f"--compression-level for {codec} is {lo}..{hi}, not {level}")
    return {"compression": codec, "compression_level": level}


class C2ScribeOptions(PipelineOptions):
    """c2scribe's own options; every other option goes to Beam (--runner, ...)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", dest="input", action="extend", nargs="+", default=None,
            metavar="PATTERN",
            help="capture files: paths or globs (recursive ** supported); other filesystems "
                 "(gs://, s3://, hdfs://) through Beam's FileSystems when their extras are "
                 "installed. Repeatable.")
        parser.add_argument("--output", dest="output", default=None, metavar="DIR",
                            help="output directory (local, or a filesystem Beam knows)")
        parser.add_argument("--decoder", dest="decoder", action="append", default=None,
                            metavar="NAME|FILE.py", help="run a C2 decoder (repeatable)")
        parser.add_argument(
            "--sensor-pattern", dest="sensor_pattern", default=None, metavar="REGEX",
            help="regular expression with a named group (?P<sensor>...) searched in each "
                 "path: files with the same sensor form one chain (default: the parent "
                 "directory)")
        parser.add_argument("--format", dest="format", choices=("parquet", "jsonl"),
                            default="parquet", help="record files: Parquet datasets "
                            "(default) or JSON lines, one file per dataset per unit")
        parser.add_argument("--body-keep", dest="body_keep", type=_size, default=64 << 10,
                            metavar="BYTES", help="HTTP body bytes stored per message "
                            "(sha256 and lengths are always stored; default 64k; 0: none)")
        parser.add_argument("--compression", dest="compression", default=None,
                            choices=PARQUET_CODECS, help="Parquet codec (default zstd; "
                            "snappy or lz4 write faster, larger files)")
        parser.add_argument("--compression-level", dest="compression_level", type=int,
                            default=None, metavar="N", help="the codec's level (zstd: "
                            "-131072..22, default 1; gzip 1..9; brotli 0..11; lz4 1..12)")
        parser.add_argument(
            "--window", dest="window", type=_window, default="auto", metavar="SECONDS|auto",
            help="cut each sensor's chain into time windows of this length, processed in "
                 "parallel (0: never; auto: chains larger than --window-bytes)")
        parser.add_argument("--window-bytes", dest="window_bytes", type=_size,
                            default=2 << 30, metavar="BYTES",
                            help="--window auto: about this much capture per window "
                                 "(default 2g)")
        parser.add_argument("--lookahead", dest="lookahead", type=float, default=3600.0,
                            metavar="SECONDS", help="windows: read this far past a window's "
                            "end for its connections to finish (default 3600)")
        parser.add_argument("--preroll", dest="preroll", type=float, default=600.0,
                            metavar="SECONDS", help="windows: read this far before a "
                            "window's start to recognise connections that began earlier "
                            "(default 600)")
        parser.add_argument("--stream-keep", dest="stream_keep", type=_size, default=None,
                            metavar="BYTES", help="first bytes of each direction stored for "
                            "connections that are not HTTP, when bodies are (--body-keep > 0; "
                            "default 4k; 0: none)")
        parser.add_argument("--engine", dest="engine", choices=ENGINES,
                            default=None, help="reassembly engine (see c2scribe transcript "
                            "--help; default: the transcript's)")
        parser.add_argument("--overlap-policy", dest="overlap_policy", default=None,
                            choices=TCP_POLICIES, metavar="POLICY", help="native engine: which copy of overlapping "
                            "TCP bytes the receiving host keeps (Suricata's host-os-policy "
                            "names; default bsd)")
        parser.add_argument("--host-policy", dest="host_policy", action="append", default=None,
                            metavar="CIDR=POLICY", help="native engine: the overlap policy of "
                            "the hosts in a block (repeatable)")
        parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                            help="run units in the Beam worker process itself, not in a "
                                 "child process that a crash or hang cannot take down")
        parser.add_argument("--unit-timeout", dest="unit_timeout", type=float, default=None,
                            metavar="SECONDS", help="give up on a unit after this long "
                            "(twice), record it as failed and go on (default: no limit)")
        parser.add_argument("--workers", dest="workers", type=int, default=os.cpu_count() or 1,
                            help="local runs: worker processes (default: all cores)")
        parser.add_argument("--progress", dest="progress", choices=("auto", "always", "never"),
                            default="auto", help="local runs: a progress line on stderr "
                            "(auto: when stderr is a terminal)")


class BackfillOptions(PipelineOptions):
    """`c2scribe backfill` only: which part of the archive, and a dry run."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--from", dest="since", default=None, metavar="DATE",
                            help="backfill: only units holding capture time from DATE "
                                 "(YYYY-MM-DD or ISO time, UTC)")
        parser.add_argument("--to", dest="until", default=None, metavar="DATE",
                            help="backfill: ... and before DATE")
        parser.add_argument("--sensor", dest="sensors", action="append", default=None,
                            metavar="NAME", help="backfill: only these sensors (repeatable)")
        parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                            help="backfill: say what would be processed, and why; do nothing")
