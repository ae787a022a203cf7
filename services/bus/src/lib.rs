//! The message bus every role talks through.
//!
//! Two implementations with one behaviour: NATS JetStream ([`jetstream`]) for clusters, and an
//! in-process store ([`inproc`]) for `spreadagg all` without a NATS URL. Both keep streams with
//! age/bytes/count limits and a duplicate window keyed by `Nats-Msg-Id`, durable pull consumers
//! with explicit acks, redelivery after the ack wait and a cap on unacknowledged messages, and
//! live subscriptions that see only new messages. `tests/behaviour.rs` runs one suite against
//! both.
//!
//! The bus is an enum, not a trait object: there are exactly two implementations, and an enum
//! keeps async methods plain (no boxing per call).

pub mod inproc;
pub mod jetstream;
mod publisher;
mod service;
mod settings;
mod subject;

use std::time::Duration;

use bytes::Bytes;

pub use publisher::{PublishFailed, Publisher};
pub use service::{Request, Service};
pub use settings::{StorageKind, StreamSettings};
pub use subject::subject_matches;

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("no stream captures subject {0}")]
    NoStream(String),
    #[error("consumer {consumer} on {stream}: {reason}")]
    Consumer {
        stream: String,
        consumer: String,
        reason: String,
    },
    #[error("no consumer {consumer} on {stream}")]
    NoConsumer { stream: String, consumer: String },
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("request on {subject}: {reason}")]
    Request { subject: String, reason: String },
    #[error("ack failed: {0}")]
    Ack(String),
    #[error("the bus is closed")]
    Closed,
}

/// A message to publish. `msg_id` becomes `Nats-Msg-Id`: a repeat within the stream's
/// duplicate window is stored once.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    pub subject: String,
    pub msg_id: String,
    pub payload: Bytes,
}

/// The stream's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    pub stream_seq: u64,
    /// True when the message id was seen within the duplicate window and nothing was stored.
    pub duplicate: bool,
}

/// A durable pull consumer's definition.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    /// Durable name: progress survives restarts of the consumer (and, on JetStream, of the
    /// server).
    pub durable: String,
    /// Subject filter within the stream (`md.tick.>`).
    pub filter: String,
    /// Unacknowledged deliveries are redelivered after this long.
    pub ack_wait: Duration,
    /// At most this many deliveries are outstanding; past it delivery pauses. This is the
    /// consumer's backpressure: a slow consumer stops the flow to itself, memory stays flat.
    pub max_ack_pending: usize,
    /// How many messages one pull fetches.
    pub batch: usize,
    /// Where a durable created now begins: this stream sequence, or (`None`) the first
    /// message stored. Ignored when the durable already exists (its progress is kept).
    pub start_seq: Option<u64>,
}

/// A stream's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A durable consumer's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    /// Every stream sequence at or below this is acknowledged.
    pub ack_floor: u64,
    /// Delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Not yet delivered.
    pub pending: u64,
    /// The highest stream sequence delivered so far (0 before the first delivery); on
    /// JetStream this includes messages a pull fetched into the client's buffer, so it is at
    /// least the highest the caller has seen.
    pub delivered_seq: u64,
}

/// A stored message read back by sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub subject: String,
    pub payload: Bytes,
    pub stream_seq: u64,
}

/// One delivered message; acknowledge it once it is durable downstream.
#[derive(Debug)]
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    pub stream_seq: u64,
    /// True when this is a redelivery.
    pub redelivered: bool,
    acker: Acker,
}

enum Acker {
    InProc(inproc::AckHandle),
    /// Boxed: the client's acker is about 256 bytes, and deliveries are moved often (a
    /// buffer of them per archived stream).
    JetStream(Box<async_nats::jetstream::message::Acker>),
    /// Live subscriptions need no acknowledgement.
    None,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acker::InProc(_) => "InProc",
            Acker::JetStream(_) => "JetStream",
            Acker::None => "None",
        })
    }
}

impl Delivery {
    /// Acknowledges the message: it will not be delivered again.
    ///
    /// # Errors
    /// When the acknowledgement cannot be sent (the message will then be redelivered).
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Acker::InProc(h) => {
                h.ack();
                Ok(())
            }
            Acker::JetStream(a) => a.ack().await.map_err(|e| BusError::Ack(e.to_string())),
            Acker::None => Ok(()),
        }
    }

    /// Tells the server the message is still being worked on: its redelivery timer starts
    /// again (a full `ack_wait` from now). Lets a consumer keep a short `ack_wait`, so a
    /// crashed consumer's messages come back quickly, while a slow write holds them longer.
    ///
    /// # Errors
    /// When it cannot be sent (the message may then be redelivered when its timer runs out).
    pub async fn in_progress(&self) -> Result<(), BusError> {
        match &self.acker {
            Acker::InProc(h) => {
                h.in_progress();
                Ok(())
            }
            Acker::JetStream(a) => a
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| BusError::Ack(e.to_string())),
            Acker::None => Ok(()),
        }
    }

    /// Refuses the message for good: it is never delivered again (and not counted as
    /// processed). For messages that can never be handled; the caller counts and keeps the
    /// reason.
    ///
    /// # Errors
    /// When it cannot be sent (the message will then be redelivered).
    pub async fn term(self) -> Result<(), BusError> {
        match self.acker {
            Acker::InProc(h) => {
                h.ack();
                Ok(())
            }
            Acker::JetStream(a) => a
                .ack_with(async_nats::jetstream::AckKind::Term)
                .await
                .map_err(|e| BusError::Ack(e.to_string())),
            Acker::None => Ok(()),
        }
    }
}

/// The bus: cheap to clone, shared by every role of a process.
#[derive(Clone, Debug)]
pub enum Bus {
    InProc(inproc::InProcBus),
    /// Boxed: the client and context are large, the in-process handle is one pointer.
    JetStream(Box<jetstream::JetStreamBus>),
}

impl Bus {
    /// An in-process bus with the four streams of the contract. Retention is capped by
    /// [`StreamSettings::for_in_process`]: the messages live in this process's memory.
    pub fn in_process(settings: &StreamSettings) -> Self {
        Bus::InProc(inproc::InProcBus::new(&settings.for_in_process()))
    }

    /// Whether the bus can reach its broker now (always true in process).
    pub fn is_connected(&self) -> bool {
        match self {
            Bus::InProc(_) => true,
            Bus::JetStream(b) => b.is_connected(),
        }
    }

    /// Connects to NATS and creates or updates the four streams. Reconnects after a NATS
    /// restart are automatic and unlimited.
    ///
    /// # Errors
    /// When NATS cannot be reached or a stream cannot be created or updated.
    pub async fn connect(url: &str, settings: &StreamSettings) -> Result<Self, BusError> {
        Ok(Bus::JetStream(Box::new(
            jetstream::JetStreamBus::connect(url, settings).await?,
        )))
    }

    /// Connects to NATS without creating or updating any stream: for tools that read the
    /// streams as they are (`archive verify`), whose stream settings are not the operator's.
    ///
    /// # Errors
    /// When NATS cannot be reached.
    pub async fn connect_existing(url: &str) -> Result<Self, BusError> {
        Ok(Bus::JetStream(Box::new(
            jetstream::JetStreamBus::connect_existing(url).await?,
        )))
    }

    /// `inproc` or `jetstream`, for logs and `/health`.
    pub fn kind(&self) -> &'static str {
        match self {
            Bus::InProc(_) => "inproc",
            Bus::JetStream(_) => "jetstream",
        }
    }

    /// Publishes one message and waits for the stream's acknowledgement.
    ///
    /// # Errors
    /// When no stream captures the subject or the acknowledgement fails or times out.
    pub async fn publish(&self, msg: &OutMessage) -> Result<PubAck, BusError> {
        match self {
            Bus::InProc(b) => b.publish(msg),
            Bus::JetStream(b) => b.publish(msg).await?.wait(&msg.subject).await,
        }
    }

    /// A pipelining publisher with at most `max_in_flight` unacknowledged publishes.
    pub fn publisher(&self, max_in_flight: usize) -> Publisher {
        Publisher::new(self.clone(), max_in_flight)
    }

    /// Opens (creating or updating) a durable pull consumer.
    ///
    /// # Errors
    /// When the stream does not exist or the consumer cannot be created.
    pub async fn durable(&self, spec: &ConsumerSpec) -> Result<Consumer, BusError> {
        Ok(match self {
            Bus::InProc(b) => Consumer::InProc(b.durable(spec)?),
            Bus::JetStream(b) => Consumer::JetStream(Box::new(b.durable(spec).await?)),
        })
    }

    /// Subscribes to messages published from now on (no history, no acks).
    ///
    /// # Errors
    /// When the stream does not exist.
    pub async fn live(&self, stream: &str, filter: &str) -> Result<Consumer, BusError> {
        Ok(match self {
            Bus::InProc(b) => Consumer::InProc(b.live(stream, filter)?),
            Bus::JetStream(b) => Consumer::JetStream(Box::new(b.live(stream, filter).await?)),
        })
    }

    /// Reads the stream's history from the first message stored within the last `since`, in
    /// stream order, then follows new messages (no acks, nothing remembered): for rebuilding
    /// state. The caller decides where to stop.
    ///
    /// # Errors
    /// When the stream does not exist or the reader cannot be created.
    pub async fn history(
        &self,
        stream: &str,
        filter: &str,
        since: Duration,
    ) -> Result<Consumer, BusError> {
        Ok(match self {
            Bus::InProc(b) => Consumer::InProc(b.history(stream, filter, since)?),
            Bus::JetStream(b) => {
                Consumer::JetStream(Box::new(b.history(stream, filter, since).await?))
            }
        })
    }

    /// # Errors
    /// When the stream does not exist.
    pub async fn stream_state(&self, stream: &str) -> Result<StreamState, BusError> {
        match self {
            Bus::InProc(b) => b.stream_state(stream),
            Bus::JetStream(b) => b.stream_state(stream).await,
        }
    }

    /// # Errors
    /// [`BusError::NoConsumer`] when the durable does not exist; otherwise when the stream
    /// does not exist or the server cannot be asked.
    pub async fn consumer_state(
        &self,
        stream: &str,
        durable: &str,
    ) -> Result<ConsumerState, BusError> {
        match self {
            Bus::InProc(b) => b.consumer_state(stream, durable),
            Bus::JetStream(b) => b.consumer_state(stream, durable).await,
        }
    }

    /// Reads one stored message by stream sequence; `None` when it is gone or never was.
    ///
    /// # Errors
    /// When the stream does not exist or the server fails.
    pub async fn get(&self, stream: &str, seq: u64) -> Result<Option<StoredMessage>, BusError> {
        match self {
            Bus::InProc(b) => b.get(stream, seq),
            Bus::JetStream(b) => b.get(stream, seq).await,
        }
    }

    /// Makes sure everything sent so far (acks included) has reached the server.
    ///
    /// # Errors
    /// When the connection cannot be flushed.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::InProc(_) => Ok(()),
            Bus::JetStream(b) => b.flush().await,
        }
    }
}

/// A durable consumer or a live subscription.
#[derive(Debug)]
pub enum Consumer {
    InProc(inproc::InProcConsumer),
    JetStream(Box<jetstream::JetStreamConsumer>),
}

impl Consumer {
    /// The next delivery. Waits while there is none; cancel by dropping the future (it is
    /// cancellation-safe: nothing is delivered that is not returned).
    ///
    /// # Errors
    /// On a transient server error; the caller may simply call again.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        match self {
            Consumer::InProc(c) => c.next().await,
            Consumer::JetStream(c) => c.next().await,
        }
    }
}
