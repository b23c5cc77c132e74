"""The Calamari engines: one module per version."""
