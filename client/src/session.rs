//! The exchange with seqd without any I/O: the hello, request ids,
//! encoding a batch of requests into one buffer, and routing replies back
//! to their requests by id. The blocking and the async client drive it and
//! differ only in their sockets.

use crate::ClientError;
use seqd_protocol::codec;
use seqd_protocol::{
    ClientMessage, ErrorCode, Request, Response, ServerMessage, DEFAULT_MAX_FRAME,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::ops::Range;

/// One connection's protocol state.
pub(crate) struct Session {
    /// The largest frame sent or accepted.
    pub(crate) max_frame: usize,
    /// The protocol version to say hello with: the newest, until a daemon
    /// refuses it (an older seqd during a rolling upgrade), then 1.
    pub(crate) version: u32,
    /// The id of the next request; ids never repeat on a connection.
    next_id: u64,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            max_frame: DEFAULT_MAX_FRAME,
            version: PROTOCOL_VERSION,
            next_id: 1,
        }
    }

    /// The hello frame that opens a connection.
    pub(crate) fn hello(&self) -> Result<Vec<u8>, ClientError> {
        let hello = ClientMessage::Hello {
            version: self.version,
            client: format!("seqd-client/{}", env!("CARGO_PKG_VERSION")),
        };
        Ok(codec::encode_frame(&hello, self.max_frame)?)
    }

    /// Appends one frame per request to `out` (which is cleared first) and
    /// returns the batch that collects their responses.
    pub(crate) fn encode(
        &mut self,
        requests: &[Request],
        out: &mut Vec<u8>,
    ) -> Result<Batch, ClientError> {
        out.clear();
        let first_id = self.next_id;
        self.next_id += requests.len() as u64;
        for (i, request) in requests.iter().enumerate() {
            let msg = ClientMessage::Request {
                id: first_id + i as u64,
                request: request.clone(),
            };
            codec::encode_frame_into(out, &msg, self.max_frame)?;
        }
        Ok(Batch {
            ids: first_id..self.next_id,
            results: (0..requests.len()).map(|_| None).collect(),
            missing: requests.len(),
        })
    }
}

/// After `answer` to a hello: true when the daemon does not speak this
/// session's version but may speak the oldest one (say hello again with
/// it, on a new connection: the daemon closes after refusing).
pub(crate) fn retry_older(session: &mut Session, answer: &Result<(), ClientError>) -> bool {
    let refused =
        matches!(answer, Err(ClientError::Server(e)) if e.code == ErrorCode::VersionMismatch);
    if refused && session.version > MIN_PROTOCOL_VERSION {
        session.version = MIN_PROTOCOL_VERSION;
        return true;
    }
    false
}

/// The daemon's answer to the hello.
pub(crate) fn hello_answer(msg: ServerMessage) -> Result<(), ClientError> {
    match msg {
        ServerMessage::Hello { .. } => Ok(()),
        ServerMessage::Error { error } => Err(ClientError::Server(error)),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer to hello: {other:?}"
        ))),
    }
}

/// The responses of a batch of requests, which may arrive in any order.
pub(crate) struct Batch {
    ids: Range<u64>,
    results: Vec<Option<Result<Response, ClientError>>>,
    missing: usize,
}

impl Batch {
    /// True when every request has its response.
    pub(crate) fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Routes one server message to its request. An error means the
    /// connection cannot go on (the caller drops it).
    pub(crate) fn accept(&mut self, msg: ServerMessage) -> Result<(), ClientError> {
        let (id, result) = response_of(msg, self.ids.clone())?;
        let slot = &mut self.results[(id - self.ids.start) as usize];
        if slot.is_none() {
            self.missing -= 1;
        }
        *slot = Some(result);
        Ok(())
    }

    /// The responses, in request order.
    pub(crate) fn finish(self) -> Vec<Result<Response, ClientError>> {
        self.results
            .into_iter()
            .map(|r| r.expect("complete batch"))
            .collect()
    }
}

/// A server message read while waiting for the requests with ids in
/// `expected`: the response of one of them, or why the connection cannot
/// go on (the caller drops it).
fn response_of(
    msg: ServerMessage,
    expected: Range<u64>,
) -> Result<(u64, Result<Response, ClientError>), ClientError> {
    match msg {
        ServerMessage::Response { id, result } if expected.contains(&id) => {
            Ok((id, result.map_err(ClientError::Server)))
        }
        ServerMessage::Response { id, .. } => Err(ClientError::Protocol(format!(
            "response for unknown request id {id}"
        ))),
        // The daemon closed an idle connection while this request was on
        // its way: a broken connection, so it is retried.
        ServerMessage::Error { error } if error.code == ErrorCode::Unavailable => {
            Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                error.message,
            )))
        }
        ServerMessage::Error { error } => Err(ClientError::Server(error)),
        ServerMessage::Hello { .. } => Err(ClientError::Protocol("unexpected hello".into())),
    }
}

/// The pauses between tries to connect to a seqd that is not up yet:
/// 10 ms doubling to 200 ms, until the deadline.
pub(crate) struct ConnectRetry {
    deadline: std::time::Instant,
    pause: std::time::Duration,
}

impl ConnectRetry {
    pub(crate) fn within(window: std::time::Duration) -> ConnectRetry {
        ConnectRetry {
            deadline: std::time::Instant::now() + window,
            pause: std::time::Duration::from_millis(10),
        }
    }

    /// After a failed try: the pause before the next one (the last one
    /// ends at the deadline), or `None` to give up with `e`.
    pub(crate) fn after(&mut self, e: &crate::ClientError) -> Option<std::time::Duration> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if !e.is_not_up_yet() || left.is_zero() {
            return None;
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(std::time::Duration::from_millis(200));
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqd_protocol::WireError;

    fn response(id: u64, seq: u64) -> ServerMessage {
        ServerMessage::Response {
            id,
            result: Ok(Response::Conv {
                seq,
                source: seqd_protocol::Source::Redis,
            }),
        }
    }

    #[test]
    fn responses_in_any_order_come_back_in_request_order() {
        let mut s = Session::new();
        let mut out = Vec::new();
        let mut batch = s
            .encode(&[Request::Ping, Request::Ping, Request::Ping], &mut out)
            .unwrap();
        for (id, seq) in [(3, 30), (1, 10), (2, 20)] {
            assert!(!batch.is_complete());
            batch.accept(response(id, seq)).unwrap();
        }
        assert!(batch.is_complete());
        let seqs: Vec<u64> = batch
            .finish()
            .into_iter()
            .map(|r| match r.unwrap() {
                Response::Conv { seq, .. } => seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![10, 20, 30]);
        // The next batch's ids follow on, and the encoded frames decode.
        let mut next = s.encode(&[Request::Ping], &mut out).unwrap();
        let msg: ClientMessage = codec::decode_payload(&out[4..], s.max_frame).unwrap();
        assert!(matches!(msg, ClientMessage::Request { id: 4, .. }));
        assert!(next.accept(response(3, 1)).is_err(), "an old id is refused");
    }

    #[test]
    fn an_unavailable_error_frame_is_a_broken_connection() {
        let mut s = Session::new();
        let mut batch = s.encode(&[Request::Ping], &mut Vec::new()).unwrap();
        let e = batch
            .accept(ServerMessage::Error {
                error: WireError::new(ErrorCode::Unavailable, "idle"),
            })
            .unwrap_err();
        assert!(e.is_broken_connection());
    }

    #[test]
    fn a_daemon_refusing_version_2_is_spoken_to_in_version_1_once() {
        let mut s = Session::new();
        assert_eq!(s.version, PROTOCOL_VERSION);
        let refused: Result<(), ClientError> = Err(ClientError::Server(WireError::new(
            ErrorCode::VersionMismatch,
            "this seqd speaks 1",
        )));
        assert!(retry_older(&mut s, &refused));
        assert_eq!(s.version, MIN_PROTOCOL_VERSION);
        let hello: ClientMessage =
            codec::decode_payload(&s.hello().unwrap()[4..], s.max_frame).unwrap();
        assert!(matches!(hello, ClientMessage::Hello { version: 1, .. }));
        assert!(!retry_older(&mut s, &refused), "no version below 1 to try");
        assert!(!retry_older(&mut Session::new(), &Ok(())));
    }
}
