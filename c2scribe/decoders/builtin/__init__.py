"""Decoders shipped with c2scribe; each module is one decoder."""
