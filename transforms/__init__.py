"""Beam PTransforms/DoFns around the core, and the sinks. Schemas come from c2scribe.schema only.

transforms.parquet: ParquetDatasetWriter (plain Python) and WriteParquet (Beam, built lazily).
transforms.elasticsearch: the Elasticsearch indexer (plain Python; documents and templates
from c2scribe.ecs).
"""
