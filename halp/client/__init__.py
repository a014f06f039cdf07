"""
The HALP client: find peers through HALP servers, with a local cache.

``HALPClient`` answers lookups and sends announcements;
``HALPClientService`` keeps followed labels fresh and re-announces a
program's own entries; ``halp.cli`` is the ``halp`` command.
"""

from halp.client.client import (
    CACHE_LIMITS,
    SERVERS_LABEL,
    AnnounceResult,
    HALPClient,
    LabelList,
    PeerList,
    ServerResult,
    fair_merge,
    group_cap,
    open_cache,
)
from halp.client.servers import ServerAddress, ServerRecord, parse_server
from halp.client.service import HALPClientService

__all__ = [
    "AnnounceResult",
    "CACHE_LIMITS",
    "HALPClient",
    "HALPClientService",
    "LabelList",
    "PeerList",
    "SERVERS_LABEL",
    "ServerAddress",
    "ServerRecord",
    "ServerResult",
    "fair_merge",
    "group_cap",
    "open_cache",
    "parse_server",
]
