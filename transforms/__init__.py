"""Beam PTransforms/DoFns around the core, and the Parquet/Elasticsearch sinks (issue 4/5: not
built yet). Each DoFn will wrap one core call; schemas come from c2scribe.schema only.
"""
