"""Options of `c2scribe run`: a PipelineOptions subclass, so runner flags pass through."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions


class C2ScribeOptions(PipelineOptions):
    """--input PATTERN... (repeatable), --output DIR, --decoder NAME (repeatable),
    --sensor-pattern REGEX (named group `sensor`), --workers N (local runs)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", dest="input", action="extend", nargs="+", default=None,
            metavar="PATTERN",
            help="capture files: paths or globs (recursive ** supported); other filesystems "
                 "(gs://, s3://, ...) through Beam's FileSystems. Repeatable.")
        parser.add_argument("--output", dest="output", default=None, metavar="DIR",
                            help="output directory: DIR/<dataset>/<unit>.jsonl, DIR/_status/")
        parser.add_argument("--decoder", dest="decoder", action="append", default=None,
                            metavar="NAME|FILE.py", help="run a C2 decoder (repeatable)")
        parser.add_argument(
            "--sensor-pattern", dest="sensor_pattern", default=None, metavar="REGEX",
            help="regular expression with a named group (?P<sensor>...) searched in each "
                 "path: files with the same sensor form one chain (default: the parent "
                 "directory)")
        parser.add_argument("--format", dest="format", choices=("jsonl", "parquet"),
                            default="jsonl", help="record files: JSON lines per dataset per "
                            "unit (default), or Parquet through transforms.parquet")
        parser.add_argument("--workers", dest="workers", type=int, default=os.cpu_count() or 1,
                            help="local runs: worker processes (default: all cores)")
