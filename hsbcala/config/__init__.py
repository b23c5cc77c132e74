"""config: the structured configuration every entry point composes.

``schema`` (the dataclasses in Hydra's ConfigStore, resolvers, the semantic checks), ``sweeps`` (a sweep point's
model-directory name) and ``ref`` (``python -m hsbcala.config.ref``: docs/configuration.md generated from the
schema). Leaves elsewhere receive the sub-node they use, never the whole config. Imports: core, engines, data.
"""
