"""hsbcala: train, resume, profile, track and evaluate Calamari OCR models for Upper Sorbian prints."""

__version__ = "0.1.0"
