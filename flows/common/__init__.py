"""Shared pieces: settings, database access, errors, artifacts, event names."""
