//! Request/reply outside the streams (core NATS): a role answers requests on a subject filter
//! and another asks. Nothing is stored; a request nobody answers times out. Used for the
//! engine's chart snapshots.
//!
//! The in-process bus keeps a registry of services; a request goes to every service whose
//! filter matches (their queues are bounded: a full one is skipped) and the first answer wins,
//! as with NATS.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{Bus, BusError, subject_matches};

/// Requests a service holds before the requester hears "nobody answered" (in process) or
/// NATS's slow-consumer handling applies (on NATS).
const SERVICE_QUEUE: usize = 64;

/// One request to answer.
#[derive(Debug)]
pub struct Request {
    pub subject: String,
    pub payload: Bytes,
    reply: Replier,
}

#[derive(Debug)]
enum Replier {
    InProc(mpsc::Sender<Bytes>),
    Nats {
        client: async_nats::Client,
        reply: Option<async_nats::Subject>,
    },
}

/// Answers go to request inboxes only: a requester naming a stream's subject as its reply
/// address would have the answer stored there under the answerer's name.
const INBOX_PREFIX: &str = "_INBOX.";

impl Request {
    /// Whether an answer can be sent: the requester is waiting on an inbox (`_INBOX.`, NATS
    /// clients' default prefix), or asked in process.
    pub fn can_reply(&self) -> bool {
        match &self.reply {
            Replier::InProc(tx) => !tx.is_closed(),
            Replier::Nats { reply, .. } => reply
                .as_ref()
                .is_some_and(|r| r.as_str().starts_with(INBOX_PREFIX)),
        }
    }

    /// Sends the answer (nothing happens if the requester has gone).
    ///
    /// # Errors
    /// When the answer cannot be sent over NATS.
    pub async fn respond(self, payload: Bytes) -> Result<(), BusError> {
        match self.reply {
            Replier::InProc(tx) => {
                let _ = tx.try_send(payload);
                Ok(())
            }
            Replier::Nats { client, reply } => {
                let Some(reply) = reply else { return Ok(()) };
                if !reply.as_str().starts_with(INBOX_PREFIX) {
                    return Err(BusError::Request {
                        subject: self.subject,
                        reason: format!("reply subject {reply} is not an inbox; not answered"),
                    });
                }
                client
                    .publish(reply, payload)
                    .await
                    .map_err(|e| BusError::Publish {
                        subject: self.subject,
                        reason: e.to_string(),
                    })
            }
        }
    }
}

/// Requests arriving on a filter.
#[derive(Debug)]
pub enum Service {
    InProc(mpsc::Receiver<Request>),
    Nats {
        client: async_nats::Client,
        subscriber: async_nats::Subscriber,
    },
}

impl Service {
    /// The next request; `None` once the bus is gone. Cancellation-safe.
    pub async fn next(&mut self) -> Option<Request> {
        match self {
            Service::InProc(rx) => rx.recv().await,
            Service::Nats { client, subscriber } => {
                let m = subscriber.next().await?;
                Some(Request {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                    reply: Replier::Nats {
                        client: client.clone(),
                        reply: m.reply,
                    },
                })
            }
        }
    }
}

/// A service's filter and its queue.
type Entry = (String, mpsc::Sender<Request>);

/// The in-process bus's services.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    services: Arc<Mutex<Vec<Entry>>>,
}

impl Registry {
    pub(crate) fn serve(&self, filter: &str) -> Service {
        let (tx, rx) = mpsc::channel(SERVICE_QUEUE);
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.retain(|(_, s)| !s.is_closed());
        services.push((filter.to_owned(), tx));
        Service::InProc(rx)
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let (reply_tx, mut reply_rx) = mpsc::channel(1);
        let mut asked = 0;
        {
            let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
            services.retain(|(_, s)| !s.is_closed());
            for (filter, service) in services.iter() {
                if subject_matches(filter, subject)
                    && service
                        .try_send(Request {
                            subject: subject.to_owned(),
                            payload: payload.clone(),
                            reply: Replier::InProc(reply_tx.clone()),
                        })
                        .is_ok()
                {
                    asked += 1;
                }
            }
        }
        drop(reply_tx);
        if asked == 0 {
            return Err(no_answer(subject, "no responders"));
        }
        match tokio::time::timeout(timeout, reply_rx.recv()).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(no_answer(subject, "no service answered")),
            Err(_) => Err(no_answer(subject, "timed out")),
        }
    }
}

fn no_answer(subject: &str, reason: &str) -> BusError {
    BusError::Request {
        subject: subject.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Bus {
    /// Answers requests on `filter` (core NATS subjects outside the streams).
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn serve(&self, filter: &str) -> Result<Service, BusError> {
        match self {
            Bus::InProc(b) => Ok(b.services().serve(filter)),
            Bus::JetStream(b) => {
                let client = b.client().clone();
                let subscriber = client
                    .subscribe(filter.to_owned())
                    .await
                    .map_err(|e| no_answer(filter, &e.to_string()))?;
                Ok(Service::Nats { client, subscriber })
            }
        }
    }

    /// Asks and waits for the first answer.
    ///
    /// # Errors
    /// [`BusError::Request`] when nobody answers within `timeout` (or nobody serves it).
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        match self {
            Bus::InProc(b) => b.services().request(subject, payload, timeout).await,
            Bus::JetStream(b) => {
                let asked = b.client().request(subject.to_owned(), payload);
                match tokio::time::timeout(timeout, asked).await {
                    Ok(Ok(m)) => Ok(m.payload),
                    Ok(Err(e)) => Err(no_answer(subject, &e.to_string())),
                    Err(_) => Err(no_answer(subject, "timed out")),
                }
            }
        }
    }
}
