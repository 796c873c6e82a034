"""The data collector: stored records shipped to the ingress in size-bounded tar.gz archives.

:mod:`~lightspeed.collector.archive` builds the archives, :mod:`~lightspeed.collector.ingress`
uploads them, :mod:`~lightspeed.collector.service` runs the cycle and the periodic loop.
Nothing here imports :mod:`aiohttp.web`: ``lightspeed collect --once`` needs no web app.
"""

from lightspeed.collector.ingress import IngressClient, UploadOutcome, UploadResult
from lightspeed.collector.service import Collector, CollectorStatus, CollectorTask, CycleReport

__all__ = [
    "Collector",
    "CollectorStatus",
    "CollectorTask",
    "CycleReport",
    "IngressClient",
    "UploadOutcome",
    "UploadResult",
]
