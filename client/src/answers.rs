//! The typed answer of each request, shared by the blocking and the async
//! client.

use crate::{ClientError, ConvSeq, DailySeq};
use seqd_protocol::{GapResult, Response, StreamStats, WriteOutcome};

pub(crate) fn pong(r: Response) -> Result<(), ClientError> {
    match r {
        Response::Pong => Ok(()),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn daily(r: Response) -> Result<DailySeq, ClientError> {
    match r {
        Response::Daily { seq, day, source } => Ok(DailySeq {
            seq,
            day,
            source,
            host: None,
        }),
        Response::DailyNumber {
            seq,
            day,
            source,
            host,
        } => Ok(DailySeq {
            seq,
            day,
            source,
            host,
        }),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn conv(r: Response) -> Result<ConvSeq, ClientError> {
    match r {
        Response::Conv { seq, source } => Ok(ConvSeq {
            seq,
            source,
            host: None,
        }),
        Response::ConvNumber { seq, source, host } => Ok(ConvSeq { seq, source, host }),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn gap(r: Response) -> Result<GapResult, ClientError> {
    match r {
        Response::Gap(r) => Ok(r),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn gap_batch(r: Response) -> Result<Vec<GapResult>, ClientError> {
    match r {
        Response::GapBatch(r) => Ok(r),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn cache_value(r: Response) -> Result<Option<Vec<u8>>, ClientError> {
    match r {
        Response::CacheValue(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn cache_written(r: Response) -> Result<WriteOutcome, ClientError> {
    match r {
        Response::CacheWritten(o) => Ok(o),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn cache_deleted(r: Response) -> Result<(u64, bool), ClientError> {
    match r {
        Response::CacheDeleted { count, deferred } => Ok((count, deferred)),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn health(r: Response) -> Result<Vec<(String, String)>, ClientError> {
    match r {
        Response::Health { fields } => Ok(fields),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn info(r: Response) -> Result<Vec<(String, String)>, ClientError> {
    match r {
        Response::Info { fields } => Ok(fields),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn cache_values(r: Response) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
    match r {
        Response::CacheValues(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn gap_stats(r: Response) -> Result<Option<StreamStats>, ClientError> {
    match r {
        Response::GapStats(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn done(r: Response) -> Result<(), ClientError> {
    match r {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn cleared(r: Response) -> Result<u64, ClientError> {
    match r {
        Response::Cleared { count } => Ok(count),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn metrics(r: Response) -> Result<String, ClientError> {
    match r {
        Response::Metrics { text } => Ok(text),
        other => Err(unexpected(other)),
    }
}

/// A response of the wrong kind: the daemon and the client disagree.
pub(crate) fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}
