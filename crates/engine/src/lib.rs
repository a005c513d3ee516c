//! `engine`: the running switch. It owns sockets, clocks and tasks, and drives the pure state
//! machines of `sip` and `trunking` with them.

pub mod admission;
pub mod call;
pub mod counters;
pub mod dns;
pub mod redis_counters;
pub mod registrar;
pub mod switch;
pub mod transport;
pub mod uac;
pub mod webhooks;

pub use dns::{LocateError, Locator, Target};
pub use transport::{Inbound, ListenSpec, Outbound, TlsSettings, TransportKind, TransportLimits, Transports};
