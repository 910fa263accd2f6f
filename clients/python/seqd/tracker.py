"""The market-data sequence tracker's own shapes, on seqd.

Code written against a Redis sequence tracker with ``SequenceEventType``,
``SequenceResult`` and ``RedisSequenceTracker.check_sequence /
check_sequence_batch / get_stats / clear_symbol / clear_all`` keeps its
call sites: construct this ``RedisSequenceTracker`` with a seqd client
instead of a Redis client::

    import seqd
    from seqd.tracker import RedisSequenceTracker, SequenceEventType

    tracker = RedisSequenceTracker(seqd.Client())
    r = tracker.check_sequence("binance", "BTCUSDT", 1001)
    if r.event_type is SequenceEventType.GAP:
        print(r.gap_size)

seqd classifies (atomically in Redis, or from its local store while Redis
is away); this module only converts its answers.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .client import Client
from .wire import GapResult, StreamStats


class SequenceEventType(Enum):
    """Types of sequence events."""

    NORMAL = "normal"
    GAP = "gap"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    RESET = "reset"


@dataclass
class SequenceResult:
    """Result of a sequence check. ``gap_size`` is set for a gap only (the
    numbers missing); ``expected_sequence`` is None for a stream's first
    message."""

    event_type: SequenceEventType
    expected_sequence: Optional[int]
    actual_sequence: int
    gap_size: Optional[int] = None
    symbol: str = ""
    exchange: str = ""


def _result(r: GapResult, exchange: str, symbol: str) -> SequenceResult:
    kind = SequenceEventType(r.kind)
    return SequenceResult(
        event_type=kind,
        expected_sequence=r.expected,
        actual_sequence=r.seq,
        gap_size=r.gap if kind is SequenceEventType.GAP else None,
        symbol=symbol,
        exchange=exchange,
    )


def _stats(s: Optional[StreamStats]) -> Dict[str, Any]:
    if s is None:
        return {"exists": False}
    ts = _dt.datetime.fromtimestamp(s.last_ts_ms / 1000, tz=_dt.timezone.utc)
    return {
        "exists": True,
        "last_sequence": s.last_seq,
        "last_timestamp": ts.isoformat(),
        "gap_count": s.gap_count,
        "reset_count": s.reset_count,
    }


Event = Union[Tuple[str, str, int], Tuple[str, str, int, Optional[_dt.datetime]]]


class RedisSequenceTracker:
    """The tracker's interface, answered by seqd through ``client``."""

    def __init__(self, client: Optional[Client] = None) -> None:
        self.client = client if client is not None else Client()

    def check_sequence(
        self,
        exchange: str,
        symbol: str,
        sequence: int,
        timestamp: Optional[_dt.datetime] = None,
    ) -> SequenceResult:
        """Checks one message's sequence number. ``timestamp`` is accepted
        and not sent: seqd stamps state changes itself."""
        r = self.client.check_sequence(exchange, symbol, sequence, timestamp)
        return _result(r, exchange, symbol)

    def check_sequence_batch(self, events: Sequence[Event]) -> List[SequenceResult]:
        """Checks ``(exchange, symbol, sequence[, timestamp])`` messages in
        order, atomically: results equal checking them one by one, also
        when a stream repeats inside the batch."""
        results: List[GapResult] = self.client.check_sequence_batch(events)
        return [_result(r, e[0], e[1]) for r, e in zip(results, events)]

    def get_stats(self, exchange: str, symbol: str) -> Dict[str, Any]:
        """``{'exists': False}``, or the stream's ``last_sequence``,
        ``last_timestamp`` (ISO 8601, UTC), ``gap_count``, ``reset_count``."""
        return _stats(self.client.get_stats(exchange, symbol))

    def clear_symbol(self, exchange: str, symbol: str) -> None:
        """Forgets one stream."""
        self.client.clear_symbol(exchange, symbol)

    def clear_all(self) -> None:
        """Forgets every stream (seqd scans with SCAN, never KEYS)."""
        self.client.clear_all()
