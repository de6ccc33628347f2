"""The shared base of compressor, exporters and profiles: the one user-error type
(:class:`~compress_base.errors.CompressError`) and atomic file writes (:mod:`compress_base.fileio`).
It imports nothing of ours, so every package may use it (docs/ARCHITECTURE.md)."""
