"""Prefect Block classes for typed configuration and secrets (see blocks/*.py)."""
