"""``lightspeed-exporter``: a drop-in for the upstream exporter sidecar (lightspeed-to-dataverse-exporter).

It takes the upstream's command line, configuration file and environment
(:mod:`~lightspeed.exporter.settings`) and ships every complete ``*.json`` file another
program writes under the data directory (:mod:`~lightspeed.exporter.directory`) with the
collector's guarantees: nothing deleted unsent, leases, retries with backoff, metrics.
"""

from lightspeed.exporter.directory import DirectorySource
from lightspeed.exporter.settings import ExporterSettings, parse_exporter_args

__all__ = ["DirectorySource", "ExporterSettings", "parse_exporter_args"]
