"""The Beam graph of `c2scribe run`: options, work-unit planning, the run itself.

pipeline.units is plain Python (planning, testable without Beam); pipeline.run builds and
runs the graph. Import submodules explicitly: importing this package imports no Beam.
"""
