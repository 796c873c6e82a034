"""The data collector: stored records shipped to the ingress in size-bounded tar.gz archives.

:mod:`~lightspeed.collector.archive` builds the archives, :mod:`~lightspeed.collector.ingress`
uploads them, :mod:`~lightspeed.collector.cycle` runs one collection cycle,
:mod:`~lightspeed.collector.loop` repeats it (with backoff) as a background task, and
:mod:`~lightspeed.collector.status` holds what the collector last did.
Nothing here imports :mod:`aiohttp.web`: ``lightspeed collect --once`` needs no web app.
"""

from lightspeed.collector.cycle import Collector
from lightspeed.collector.ingress import IngressClient, UploadOutcome, UploadResult
from lightspeed.collector.loop import CollectorTask, backoff_delay
from lightspeed.collector.status import CollectorStatus, CycleReport

__all__ = [
    "Collector",
    "CollectorStatus",
    "CollectorTask",
    "CycleReport",
    "IngressClient",
    "UploadOutcome",
    "UploadResult",
    "backoff_delay",
]
