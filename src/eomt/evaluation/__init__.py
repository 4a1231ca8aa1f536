"""Evaluation of EoMT models."""
