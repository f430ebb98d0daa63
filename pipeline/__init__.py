"""The Beam graph over many captures (issue 4: not built yet).

Will hold the PipelineOptions subclass, work-unit planning (chains of rotated files, time
windows with look-ahead) and `run(argv=None)`. It drives c2scribe.engine.Engine and
c2scribe.capture.run_chain exactly as the CLI does; see docs/STATUS.md.
"""
