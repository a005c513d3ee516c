//! `sip`: the SIP message core of opentrunk.
//!
//! A zero-copy parser, a serializer that writes untouched messages back byte-exact, typed lazy
//! access to the headers a switch needs, SIP/SIPS/tel URIs, and validation that turns a bad
//! message into the response a server must send, as a value. No sockets, clocks or tasks.
//!
//! We own this code rather than use a crate: the measured Rust SIP parsers accept invalid
//! messages, reject valid ones, close the method set or panic (see `docs/architecture.md`), and
//! this is the switch's hottest path.

pub mod headers;
pub mod message;
pub mod scan;
pub mod transaction;
pub mod uri;
pub mod validate;

pub use headers::{Auth, CSeq, Contacts, HeaderName, Identity, MediaType, NameAddr, Reason, Via};
pub use message::{Frame, Framing, Message, Method, ParseError, frame};
pub use scan::Params;
pub use transaction::{ClientEvent, ClientTransaction, ServerEvent, ServerTransaction, Timers, TransactionKey};
pub use uri::{Host, SipUri, TelUri, Uri};
pub use validate::{Policy, Rejection, Verdict, inspect};

/// A syntax error, naming the fault in words fit for a `400` reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub &'static str);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Error {}
