//! The NATS JetStream bus.
//!
//! Streams are created or updated idempotently at connect. Publishes carry `Nats-Msg-Id` and
//! their acknowledgements are awaited by the [`Publisher`](crate::Publisher). Durable
//! consumers are pull consumers with explicit acks, fetched in bounded batches with idle
//! heartbeats; live subscriptions are ordered consumers delivering only new messages. The
//! client reconnects forever after a NATS restart, and pull streams resume by themselves.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self as js, Context};
use futures_util::StreamExt;

use crate::{
    Acker, BusError, ConsumerSpec, ConsumerState, Delivery, OutMessage, PubAck, StorageKind,
    StoredMessage, StreamSettings, StreamState,
};

/// How long a JetStream API call or publish acknowledgement may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes awaiting acknowledgement per connection; past it `publish` waits (backpressure).
const MAX_ACK_INFLIGHT: usize = 8192;

/// A connection to NATS with its JetStream context.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: Context,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl JetStreamBus {
    pub(crate) async fn connect(url: &str, settings: &StreamSettings) -> Result<Self, BusError> {
        let bus = Self::connect_existing(url).await?;
        bus.ensure_streams(settings).await?;
        Ok(bus)
    }

    /// Connects without creating or updating any stream (for tools that only read).
    pub(crate) async fn connect_existing(url: &str) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("spreadagg")
            .connection_timeout(API_TIMEOUT)
            .event_callback(|event| async move {
                metrics::counter!("spreadagg_bus_connection_events_total", "event" => event_label(&event)).increment(1);
                tracing::info!(%event, "nats connection event");
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: redact(url),
                reason: e.to_string(),
            })?;
        let js = js::context::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Self { client, js })
    }

    /// Creates each stream of the contract, or updates its limits when it exists.
    async fn ensure_streams(&self, settings: &StreamSettings) -> Result<(), BusError> {
        for (name, subjects) in spreadagg_model::subjects::STREAMS {
            let config = stream::Config {
                name: name.to_owned(),
                subjects: vec![subjects.to_owned()],
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                max_age: settings.max_age,
                max_bytes: settings.max_bytes,
                max_messages: if settings.max_messages > 0 {
                    settings.max_messages
                } else {
                    -1
                },
                duplicate_window: settings.duplicate_window,
                num_replicas: settings.replicas.max(1),
                storage: match settings.storage {
                    StorageKind::File => StorageType::File,
                    StorageKind::Memory => StorageType::Memory,
                },
                ..Default::default()
            };
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|e| BusError::Stream {
                    stream: name.to_owned(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    pub(crate) async fn publish(&self, msg: &OutMessage) -> Result<PendingAck, BusError> {
        let mut headers = HeaderMap::new();
        if !msg.msg_id.is_empty() {
            headers.insert("Nats-Msg-Id", msg.msg_id.as_str());
        }
        let future = self
            .js
            .publish_with_headers(msg.subject.clone(), headers, msg.payload.clone())
            .await
            .map_err(|e| BusError::Publish {
                subject: msg.subject.clone(),
                reason: e.to_string(),
            })?;
        Ok(PendingAck {
            future: std::future::IntoFuture::into_future(future),
        })
    }

    async fn stream(&self, name: &str) -> Result<stream::Stream, BusError> {
        self.js
            .get_stream(name)
            .await
            .map_err(|e| BusError::Stream {
                stream: name.to_owned(),
                reason: e.to_string(),
            })
    }

    pub(crate) async fn durable(&self, spec: &ConsumerSpec) -> Result<JetStreamConsumer, BusError> {
        let consumer_err = |reason: String| BusError::Consumer {
            stream: spec.stream.clone(),
            consumer: spec.durable.clone(),
            reason,
        };
        let stream = self.stream(&spec.stream).await?;
        // The deliver policy of an existing durable cannot be updated: keep it. Only a durable
        // created now takes `start_seq`.
        let deliver_policy = match stream.consumer_info(&spec.durable).await {
            Ok(info) => info.config.deliver_policy,
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                spec.start_seq.map_or(DeliverPolicy::All, |start_sequence| {
                    DeliverPolicy::ByStartSequence { start_sequence }
                })
            }
            Err(e) => return Err(consumer_err(e.to_string())),
        };
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(spec.durable.clone()),
                filter_subject: spec.filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_ack_pending: i64::try_from(spec.max_ack_pending).unwrap_or(i64::MAX),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| consumer_err(e.to_string()))?;
        let batch = spec.batch.clamp(1, spec.max_ack_pending.max(1));
        let messages = open_pull(&consumer, batch)
            .await
            .map_err(|e| consumer_err(e.to_string()))?;
        Ok(JetStreamConsumer {
            name: spec.durable.clone(),
            source: Source::Durable {
                consumer,
                batch,
                messages: Some(messages),
            },
        })
    }

    pub(crate) async fn live(
        &self,
        stream_name: &str,
        filter: &str,
    ) -> Result<JetStreamConsumer, BusError> {
        self.ordered(stream_name, filter, DeliverPolicy::New).await
    }

    pub(crate) async fn history(
        &self,
        stream_name: &str,
        filter: &str,
        since: Duration,
    ) -> Result<JetStreamConsumer, BusError> {
        let since = time::Duration::try_from(since).unwrap_or(time::Duration::MAX);
        let start_time = time::OffsetDateTime::now_utc()
            .checked_sub(since)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        self.ordered(
            stream_name,
            filter,
            DeliverPolicy::ByStartTime { start_time },
        )
        .await
    }

    /// An ordered (unacknowledged, self-healing) reader of the stream.
    async fn ordered(
        &self,
        stream_name: &str,
        filter: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<JetStreamConsumer, BusError> {
        let stream = self.stream(stream_name).await?;
        let ordered = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy,
                // Pulls expire after 2 s with 1 s idle heartbeats (the client's defaults are 30
                // and 15): a live feed notices a restarted server in seconds, not half a minute.
                max_expires: Duration::from_secs(2),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Consumer {
                stream: stream_name.to_owned(),
                consumer: "live".into(),
                reason: e.to_string(),
            })?
            .messages()
            .await
            .map_err(|e| BusError::Consumer {
                stream: stream_name.to_owned(),
                consumer: "live".into(),
                reason: e.to_string(),
            })?;
        Ok(JetStreamConsumer {
            name: "live".into(),
            source: Source::Live(ordered),
        })
    }

    pub(crate) async fn stream_state(&self, name: &str) -> Result<StreamState, BusError> {
        let info = self
            .stream(name)
            .await?
            .get_info()
            .await
            .map_err(|e| BusError::Stream {
                stream: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(StreamState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
        })
    }

    pub(crate) async fn consumer_state(
        &self,
        name: &str,
        durable: &str,
    ) -> Result<ConsumerState, BusError> {
        let info = self
            .stream(name)
            .await?
            .consumer_info(durable)
            .await
            .map_err(|e| {
                if e.kind() == ConsumerInfoErrorKind::NotFound {
                    BusError::NoConsumer {
                        stream: name.to_owned(),
                        consumer: durable.to_owned(),
                    }
                } else {
                    BusError::Consumer {
                        stream: name.to_owned(),
                        consumer: durable.to_owned(),
                        reason: e.to_string(),
                    }
                }
            })?;
        Ok(ConsumerState {
            ack_floor: info.ack_floor.stream_sequence,
            ack_pending: info.num_ack_pending as u64,
            pending: info.num_pending,
            delivered_seq: info.delivered.stream_sequence,
        })
    }

    pub(crate) async fn get(
        &self,
        name: &str,
        seq: u64,
    ) -> Result<Option<StoredMessage>, BusError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.stream(name).await?.get_raw_message(seq).await {
            Ok(m) => Ok(Some(StoredMessage {
                subject: m.subject.to_string(),
                payload: m.payload,
                stream_seq: m.sequence,
            })),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::Stream {
                stream: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Ack(format!("flush: {e}")))
    }
}

/// A publish whose acknowledgement has not arrived yet: async-nats's own future, held as it
/// is (no second box, no copy of the subject; the caller names the subject on error).
pub struct PendingAck {
    future: std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<js::publish::PublishAck, js::context::PublishError>,
                > + Send,
        >,
    >,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck").finish_non_exhaustive()
    }
}

impl PendingAck {
    /// Waits for the acknowledgement. Cancellation-safe (the future is kept); must not be
    /// called again once it has answered.
    pub(crate) async fn wait(&mut self, subject: &str) -> Result<PubAck, BusError> {
        let ack = self.future.as_mut().await.map_err(|e| BusError::Publish {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(PubAck {
            stream_seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

async fn open_pull(
    consumer: &js::consumer::Consumer<pull::Config>,
    batch: usize,
) -> Result<pull::Stream, async_nats::Error> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(batch)
        // Short idle heartbeats: a pull lost with a restarted server is noticed within two of
        // them and re-issued.
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(10))
        .messages()
        .await?)
}

/// One per consumer, never moved in a hot path.
#[allow(clippy::large_enum_variant)]
enum Source {
    Durable {
        consumer: js::consumer::Consumer<pull::Config>,
        batch: usize,
        messages: Option<pull::Stream>,
    },
    Live(pull::Ordered),
}

/// A durable pull consumer or a live ordered subscription on JetStream.
pub struct JetStreamConsumer {
    name: String,
    source: Source,
}

impl std::fmt::Debug for JetStreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConsumer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl JetStreamConsumer {
    pub(crate) async fn next(&mut self) -> Result<Delivery, BusError> {
        let err = |name: &str, reason: String| BusError::Consumer {
            stream: String::new(),
            consumer: name.to_owned(),
            reason,
        };
        match &mut self.source {
            Source::Durable {
                consumer,
                batch,
                messages,
            } => loop {
                let stream = match messages {
                    Some(s) => s,
                    None => messages.insert(
                        open_pull(consumer, *batch)
                            .await
                            .map_err(|e| err(&self.name, e.to_string()))?,
                    ),
                };
                match stream.next().await {
                    Some(Ok(m)) => return to_delivery(m, true).map_err(|e| err(&self.name, e)),
                    Some(Err(e)) => return Err(err(&self.name, e.to_string())),
                    // The pull stream ended (it should not); open a fresh one.
                    None => *messages = None,
                }
            },
            Source::Live(ordered) => match ordered.next().await {
                Some(Ok(m)) => to_delivery(m, false).map_err(|e| err(&self.name, e)),
                Some(Err(e)) => Err(err(&self.name, e.to_string())),
                None => Err(BusError::Closed),
            },
        }
    }
}

fn to_delivery(m: js::Message, needs_ack: bool) -> Result<Delivery, String> {
    let (stream_seq, redelivered) = {
        let info = m
            .info()
            .map_err(|e| format!("bad delivery metadata: {e}"))?;
        (info.stream_sequence, info.delivered > 1)
    };
    let (msg, acker) = m.split();
    Ok(Delivery {
        subject: msg.subject.to_string(),
        payload: msg.payload,
        stream_seq,
        redelivered,
        acker: if needs_ack {
            Acker::JetStream(Box::new(acker))
        } else {
            Acker::None
        },
    })
}

fn event_label(event: &async_nats::Event) -> &'static str {
    match event {
        async_nats::Event::Connected => "connected",
        async_nats::Event::Disconnected => "disconnected",
        async_nats::Event::LameDuckMode => "lame_duck",
        async_nats::Event::SlowConsumer(_) => "slow_consumer",
        _ => "other",
    }
}

/// A NATS URL with any credentials replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
