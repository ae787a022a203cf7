//! WebSocket surfaces: `GET /ws` (the protocol in [`protocol`]) and the prototype's
//! endpoints ([`legacy`]). Every session is a client of the hub with its own bounded queue.

pub(crate) mod legacy;
pub(crate) mod protocol;
pub(crate) mod reply;
pub(crate) mod session;
pub(crate) mod socket;
