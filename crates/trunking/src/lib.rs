//! `trunking`: the product's rules as pure code. Every rule of the product documentation
//! (authentication, caller ID, outbound voice profiles, limits, rating, routes, response codes)
//! is a function over plain data: a typed configuration ([`config::Config`]), the facts of one
//! SIP request, counters' current values and `now`. It returns decisions and never touches a
//! socket, a clock, a database or a task; the engine executes what it decides.
//!
//! Each table of the product documentation is a table here (see [`catalog`] for the response
//! codes), and every decision carries a [`trace::Trace`] of the rules it evaluated, so an
//! operator can see why a call was treated as it was.

pub mod call_rate;
pub mod caller_id;
pub mod catalog;
pub mod config;
pub mod digest;
pub mod identify;
pub mod inbound;
pub mod json;
pub mod numbering;
pub mod outbound;
pub mod rating;
pub mod registrar;
pub mod routing;
pub mod subdomain;
pub mod time;
pub mod trace;
pub mod uri_calling;

pub use catalog::{Reason, Response};
pub use time::Timestamp;
pub use trace::Trace;
