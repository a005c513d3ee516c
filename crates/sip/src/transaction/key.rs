//! Transaction matching (RFC 3261 sections 17.1.3, 17.2.3 and 9.2) as an owned, hashable key.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::headers::Via;
use crate::message::{Message, Method, itoa_u32};
use crate::uri::Host;
use crate::{Error, scan};

/// Identifies one transaction: what a driver keys its transaction tables by.
///
/// One small shared heap allocation holding a string that is never parsed back: a clone (the
/// driver's timer heap, its indexes) allocates nothing.
/// - server, RFC 3261 branch (`z9hG4bK` and more): `S` method, sent-by, branch (17.2.3). ACK
///   takes the INVITE's method, so it finds the INVITE transaction; CANCEL keeps its own.
/// - server, RFC 2543 fallback: `L` method, then the Request-URI, To tag, From tag, Call-ID,
///   CSeq number and top Via (transport, sent-by, parameters), each length-prefixed. The To tag is part of
///   the key for non-INVITE requests only: an ACK's To tag is the one the server put in its
///   response, which the INVITE did not carry, so INVITE and ACK both leave it out and the
///   INVITE server transaction checks the ACK's To tag itself.
/// - client: `C` CSeq method, branch (17.1.3). Client keys and server keys never compare equal.
///
/// Host names in sent-by are compared case-insensitively (lowercased); everything else as
/// written, as a retransmission repeats it byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionKey(Arc<str>);

impl TransactionKey {
    /// The key of the server transaction a request belongs to (17.2.3). An ACK maps to its
    /// INVITE's key; use this for every request, then create a transaction when none matches
    /// and the request is not an ACK.
    pub fn for_server(request: &Message) -> Result<TransactionKey, Error> {
        let method = request.method().ok_or(Error("not a request"))?;
        let kind = match method {
            Method::Ack => Method::Invite.as_str(),
            m => m.as_str(),
        };
        server_key(request, kind)
    }

    /// The key of the INVITE server transaction a CANCEL is for (9.2): the CANCEL matched as if
    /// its method were INVITE. A CANCEL's own transaction uses [`TransactionKey::for_server`].
    pub fn cancel_target(cancel: &Message) -> Result<TransactionKey, Error> {
        if cancel.method() != Some(Method::Cancel) {
            return Err(Error("not a CANCEL"));
        }
        server_key(cancel, Method::Invite.as_str())
    }

    /// The key of the client transaction a response belongs to (17.1.3): the branch of the top
    /// Via and the CSeq method.
    pub fn for_client_response(response: &Message) -> Result<TransactionKey, Error> {
        if !response.is_response() {
            return Err(Error("not a response"));
        }
        let (method, branch) = client_parts(response)?;
        Ok(client_key(method, branch))
    }

    /// The key text (for logs).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of the client transaction that sends `request`.
    pub(crate) fn for_client_request(request: &Message) -> Result<TransactionKey, Error> {
        let method = request.method().ok_or(Error("not a request"))?;
        let (cseq_method, branch) = client_parts(request)?;
        if cseq_method != method.as_str() {
            return Err(Error("CSeq method does not match the request method"));
        }
        Ok(client_key(cseq_method, branch))
    }

    /// Whether `response` matches this client key, without allocating.
    pub(crate) fn matches_client_response(&self, response: &Message) -> bool {
        let Ok((method, branch)) = client_parts(response) else { return false };
        self.0.strip_prefix('C').and_then(|r| r.strip_prefix(method)).and_then(|r| r.strip_prefix(' ')) == Some(branch)
    }

    /// The method a server key was made for (INVITE for an ACK's), or a client key's CSeq
    /// method: the text between the kind letter and the first space.
    pub(crate) fn method(&self) -> &str {
        let rest = self.0.get(1..).unwrap_or_default();
        rest.split_once(' ').map_or(rest, |(m, _)| m)
    }

    /// `false` for the RFC 2543 fallback key.
    pub(crate) fn is_rfc3261(&self) -> bool {
        !self.0.starts_with('L')
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// CSeq method and top Via branch.
fn client_parts(msg: &Message) -> Result<(&str, &str), Error> {
    let branch = msg.top_via_branch()?.filter(|b| !b.is_empty()).ok_or(Error("top Via has no branch"))?;
    let cseq = msg.cseq()?;
    Ok((cseq.method.as_str(), branch))
}

fn client_key(method: &str, branch: &str) -> TransactionKey {
    let mut s = String::with_capacity(2 + method.len() + branch.len());
    s.push('C');
    s.push_str(method);
    s.push(' ');
    s.push_str(branch);
    exact(s)
}

fn server_key(msg: &Message, kind: &str) -> Result<TransactionKey, Error> {
    let via = msg.top_via()?;
    let sent_by = SentBy::of(&via);
    // `Via::has_rfc3261_branch`, without looking the parameter up twice.
    let branch = match msg.cached_top_branch() {
        Some(branch) => branch,
        None => via.branch(),
    };
    if let Some(branch) = branch.filter(|b| b.len() > 7 && b.starts_with("z9hG4bK")) {
        let mut s = String::with_capacity(3 + kind.len() + sent_by.len() + branch.len());
        s.push('S');
        s.push_str(kind);
        s.push(' ');
        sent_by.write(&mut s);
        s.push(' ');
        s.push_str(branch);
        return Ok(exact(s));
    }
    // RFC 2543 fallback (17.2.3): Request-URI, To tag (not for INVITE/ACK, see the type's
    // docs), From tag, Call-ID, CSeq number and top Via.
    let uri = msg.request_uri_str().ok_or(Error("not a request"))?;
    let from_tag = msg.from()?.tag().unwrap_or("");
    let to_tag = if kind == Method::Invite.as_str() { "" } else { msg.to()?.tag().unwrap_or("") };
    let call_id = msg.call_id()?;
    let seq = itoa_u32(msg.cseq()?.seq);
    let fields = [
        Field::Text(uri),
        Field::Text(to_tag),
        Field::Text(from_tag),
        Field::Text(call_id),
        Field::Text(seq.as_str()),
        Field::Text(via.transport),
        Field::SentBy(&sent_by),
        Field::Text(via.params.as_str()),
    ];
    let len = 2 + kind.len() + fields.iter().map(|f| digits(f.len()) + 1 + f.len()).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push('L');
    s.push_str(kind);
    s.push(' ');
    for f in &fields {
        s.push_str(itoa_u32(u32::try_from(f.len()).unwrap_or(u32::MAX)).as_str());
        s.push(':');
        match f {
            Field::Text(t) => s.push_str(t),
            Field::SentBy(sb) => sb.write(&mut s),
        }
    }
    Ok(exact(s))
}

/// The key from a string built to its exact capacity.
fn exact(s: String) -> TransactionKey {
    debug_assert_eq!(s.len(), s.capacity(), "key capacity miscounted: {s}");
    TransactionKey(Arc::from(s))
}

enum Field<'a> {
    Text(&'a str),
    SentBy(&'a SentBy<'a>),
}

impl Field<'_> {
    fn len(&self) -> usize {
        match self {
            Field::Text(t) => t.len(),
            Field::SentBy(sb) => sb.len(),
        }
    }
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A Via sent-by (`host[:port]`) rendered without allocating: a host name is written
/// lowercased, an IP address is formatted into a small buffer on the stack.
struct SentBy<'a> {
    name: Option<&'a str>,
    ip: StackStr,
    port: Option<u16>,
}

impl<'a> SentBy<'a> {
    fn of(via: &Via<'a>) -> SentBy<'a> {
        let mut ip = StackStr::new();
        let name = match via.host {
            Host::Domain(d) => Some(d),
            Host::Ipv4(a) => {
                // The formatting machinery costs more than the rest of the key; four numbers
                // do not need it.
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        let _ = ip.write_str(".");
                    }
                    let _ = ip.write_str(itoa_u32(u32::from(o)).as_str());
                }
                None
            }
            other => {
                // An IPv6 reference is at most 47 bytes; the buffer holds 64.
                let _ = write!(ip, "{other}");
                None
            }
        };
        SentBy { name, ip, port: via.port }
    }

    fn len(&self) -> usize {
        let host = self.name.map_or(self.ip.as_str().len(), str::len);
        host + self.port.map_or(0, |p| 1 + digits(usize::from(p)))
    }

    fn write(&self, s: &mut String) {
        match self.name {
            // Hostnames are ASCII (the Via parser admits only hostname characters), so
            // lowercasing keeps the length.
            Some(d) => s.extend(d.chars().map(|c| c.to_ascii_lowercase())),
            None => s.push_str(self.ip.as_str()),
        }
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(itoa_u32(u32::from(p)).as_str());
        }
    }
}

struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl StackStr {
    fn new() -> StackStr {
        StackStr { buf: [0; 64], len: 0 }
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The first value of the top Via field, as written (what an ACK built by a client
/// transaction must repeat, 17.1.1.3).
pub(crate) fn top_via_text(msg: &Message) -> Option<&str> {
    let first = msg.header(crate::headers::HeaderName::Via)?;
    scan::split_list(first).next().filter(|v| !v.is_empty())
}
