//! Who a client is and why its session ends: the names every surface (WebSocket, gRPC) and
//! the queue share.

/// A connected client's id, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ClientId(pub(crate) u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a client's session ends; the first cause recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The gateway is stopping (`POST /drain`, SIGTERM): Close 1012 "service restart", the
    /// standard hint to reconnect (to another replica).
    Drain,
    /// The client fell too far behind: Close 1008 "too slow".
    TooSlow,
    /// The client kept sending past its rate: Close 1008 "rate limit exceeded".
    Flooding,
    /// A client frame exceeded `max_frame_bytes`: Close 1009.
    TooBig,
    /// The client broke the WebSocket protocol: Close 1002.
    Protocol,
    /// The client sent text that is not UTF-8: Close 1007.
    InvalidUtf8,
    /// Nothing heard from the client (not even a pong) for the idle timeout: Close 1001.
    Idle,
    /// The client sent Close; it is answered, nothing more.
    ClientClosed,
    /// The connection is gone (reset, EOF, write error): nothing can be sent.
    Gone,
}

impl CloseCause {
    /// The Close frame to send, if any.
    pub(crate) fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseCause::Drain => Some((1012, "draining; reconnect")),
            CloseCause::TooSlow => Some((1008, "too slow")),
            CloseCause::Flooding => Some((1008, "rate limit exceeded")),
            CloseCause::TooBig => Some((1009, "frame too large")),
            CloseCause::Protocol => Some((1002, "protocol error")),
            CloseCause::InvalidUtf8 => Some((1007, "invalid utf-8")),
            CloseCause::Idle => Some((1001, "idle timeout")),
            CloseCause::ClientClosed | CloseCause::Gone => None,
        }
    }

    /// For logs and the gRPC status message.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseCause::Drain => "drain",
            CloseCause::TooSlow => "too_slow",
            CloseCause::Flooding => "flooding",
            CloseCause::TooBig => "frame_too_large",
            CloseCause::Protocol => "protocol_error",
            CloseCause::InvalidUtf8 => "invalid_utf8",
            CloseCause::Idle => "idle",
            CloseCause::ClientClosed => "client_closed",
            CloseCause::Gone => "gone",
        }
    }
}
