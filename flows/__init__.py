"""Prefect flows for the swarm cluster."""
