"""core: what every other wing stands on, and nothing of hsbcala's own above it.

Messages (``console``), the error types and the clean exit with its exit codes (``errors``), atomic writes and
locks (``fsutil``), credentials masked wherever config is written (``masking``), and a bad command line as one
line (``cli``). Imports: the standard library, Hydra/OmegaConf; no other hsbcala wing.
"""
