"""Test servers and harnesses shared by tests/ and bench/: fakes that speak real wire protocols where no real
server can run here, and helpers that start real ones (the Prefect server, the monitoring stack)."""
