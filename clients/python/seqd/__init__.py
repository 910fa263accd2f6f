"""Python client for seqd (standard library only, Python >= 3.9).

    from zoneinfo import ZoneInfo
    import datetime, seqd

    with seqd.Client("/run/seqd/seqd.sock") as c:
        n = c.increment_daily_sequence(123, datetime.datetime.now(ZoneInfo("Asia/Kolkata")))
        print(seqd.format_order_id(n), n.source)   # the host is in it when issued locally

See ``protocol/PROTOCOL.md`` for the wire format and docs/guarantees.md for the
guarantees.
"""

from .client import DEFAULT_SOCKET, AsyncClient, Client, NotInvalidated
from .wire import (
    CacheDeleted,
    CacheItem,
    ConvNumber,
    DailyNumber,
    GapResult,
    ProtocolError,
    SeqdError,
    StreamStats,
    BadRequest,
    Forbidden,
    Internal,
    InvalidArgument,
    TooLarge,
    Unavailable,
    UnknownCommand,
    VersionMismatch,
    format_daily_seq,
    format_order_id,
)

__all__ = [
    "AsyncClient",
    "CacheDeleted",
    "CacheItem",
    "Client",
    "ConvNumber",
    "DailyNumber",
    "DEFAULT_SOCKET",
    "GapResult",
    "NotInvalidated",
    "ProtocolError",
    "SeqdError",
    "StreamStats",
    "BadRequest",
    "Forbidden",
    "Internal",
    "InvalidArgument",
    "TooLarge",
    "Unavailable",
    "UnknownCommand",
    "VersionMismatch",
    "format_daily_seq",
    "format_order_id",
]
__version__ = "0.1.0"
