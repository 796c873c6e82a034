"""Fixtures of the collector tests (defined in collector_support.py)."""

from tests.collector.collector_support import collector_config, harness, ingress

__all__ = ["collector_config", "harness", "ingress"]
