//! The message model: a parsed SIP request or response that borrows its original bytes.
//!
//! Parsing records only offsets (start line parts, each header's name, value and whole line,
//! the body), so it allocates one vector and copies nothing. Typed header values are decoded on
//! demand by the accessors in [`crate::headers`]. Edits (add, remove, replace headers, a new
//! request URI or body) are kept beside the original bytes; serializing an untouched message
//! returns the original bytes, and an edited one copies every untouched line verbatim.

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use crate::Error;
use crate::headers::HeaderName;

/// Where a message came from decides how its end is found (RFC 3261 section 18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: the body is `Content-Length` bytes, or the rest of the datagram when
    /// the header is absent; octets after the body are ignored.
    Datagram,
    /// One message cut out of a byte stream by [`frame`]: `Content-Length` is mandatory.
    Stream,
}

/// A request method. Methods are case-sensitive tokens; unknown ones are kept, not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other(&'a str),
}

impl<'a> Method<'a> {
    pub fn parse(s: &'a str) -> Method<'a> {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            other => Method::Other(other),
        }
    }
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text bytes and fields reserved beyond what [`Message::response_to`] copies.
const RESPONSE_ROOM: (usize, usize) = (128, 4);

/// A byte range into the message's original buffer, or (high bit set) into its edit buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

const EDIT: u32 = 1 << 31;

impl Span {
    fn orig(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    fn edit(start: usize, end: usize) -> Span {
        Span { start: start as u32 | EDIT, end: end as u32 }
    }
    const EMPTY: Span = Span { start: 0, end: 0 };
}

#[derive(Clone, Debug)]
pub(crate) enum Start {
    Request { method: Span, uri: Span, version: Span },
    Response { version: Span, code: u16, reason: Span },
}

#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) name: HeaderName,
    name_text: Span,
    value: Span,
    /// The whole original line with its line break(s), while the field is untouched.
    line: Option<Span>,
}

/// A SIP request or response.
#[derive(Clone, Debug)]
pub struct Message {
    /// The original bytes, exactly this message (for datagrams, trailing octets cut off).
    buf: Bytes,
    /// Length of the original start line and header section (up to and including the empty
    /// line); the part of `buf` that is text.
    head_len: usize,
    /// Text written by edits; spans with the `EDIT` bit point here.
    edits: String,
    start: Start,
    /// The original start line with its line break, while untouched.
    start_line: Option<Span>,
    fields: Vec<Field>,
    body: Bytes,
    edited: bool,
    /// The first structural fault found while splitting (see [`ParseError::partial`]).
    fault: Option<Error>,
    /// What was decoded once (by [`crate::inspect`] or [`Message::stamp_received`]) so the
    /// transaction key, the reply route, responses and the rest do not parse it again. Shared,
    /// not inline: it keeps `Message` small, and a clone shares it without copying.
    decoded: Option<std::sync::Arc<Decoded>>,
}

/// Headers decoded once, each valid only while its field keeps the value span it had.
#[derive(Clone, Copy, Debug, Default)]
struct Decoded {
    top_via: Option<TopVia>,
    /// The To field's value span, and where its tag lies within it (`None`: no tag).
    to: Option<(Span, Option<(u32, u32)>)>,
    /// The CSeq field's value span, its number, and where its method lies within it.
    cseq: Option<(Span, u32, (u32, u32))>,
    /// The value span of the Call-ID field found well formed.
    call_id: Option<Span>,
}

/// Where the parts of a decoded top Via lie in the text of the first Via field: byte ranges
/// relative to the start of that field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViaLayout {
    pub(crate) protocol_name: (u32, u32),
    pub(crate) protocol_version: (u32, u32),
    pub(crate) transport: (u32, u32),
    pub(crate) host: LayoutHost,
    pub(crate) port: Option<u16>,
    pub(crate) params: (u32, u32),
    /// The `branch` parameter's value, as [`crate::Via::branch`] finds it.
    pub(crate) branch: Option<(u32, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutHost {
    Domain(u32, u32),
    Ipv4(std::net::Ipv4Addr),
    Ipv6(std::net::Ipv6Addr),
}

impl ViaLayout {
    /// The layout of `via`, decoded from the first element of `value` (its slices borrow it).
    pub(crate) fn of(value: &str, via: &crate::Via<'_>) -> Option<ViaLayout> {
        let base = value.as_ptr() as usize;
        let range = |part: &str| -> Option<(u32, u32)> {
            let start = (part.as_ptr() as usize).checked_sub(base)?;
            let end = start + part.len();
            (end <= value.len()).then_some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
        };
        Some(ViaLayout {
            protocol_name: range(via.protocol_name)?,
            protocol_version: range(via.protocol_version)?,
            transport: range(via.transport)?,
            host: match via.host {
                crate::Host::Domain(d) => {
                    let (a, b) = range(d)?;
                    LayoutHost::Domain(a, b)
                }
                crate::Host::Ipv4(a) => LayoutHost::Ipv4(a),
                crate::Host::Ipv6(a) => LayoutHost::Ipv6(a),
            },
            port: via.port,
            params: range(via.params.as_str())?,
            branch: match via.branch() {
                Some(b) => Some(range(b)?),
                None => None,
            },
        })
    }
}

/// A decoded top Via: valid while the first Via field still has the value span it had when
/// the Via was decoded. Every edit gives a field a new span (edits only ever append), so a
/// changed, removed or newly prepended Via field can never be mistaken for the one decoded.
#[derive(Clone, Copy, Debug)]
struct TopVia {
    field: Span,
    layout: ViaLayout,
}

/// A message that could not be parsed. `partial` holds what could be split out of it (start
/// line and headers) when that much was possible, so a server can still answer a bad request.
#[derive(Debug)]
pub struct ParseError {
    pub error: Error,
    /// `505` for a SIP version other than 2.0, otherwise `400`.
    pub status: u16,
    pub partial: Option<Box<Message>>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.error)
    }
}

impl std::error::Error for ParseError {}

/// The outcome of looking for one message at the front of a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes is at the front.
    Message(usize),
    /// Keep-alive line breaks (RFC 5626 section 3.5.1 CRLF pings) of this many bytes.
    KeepAlive(usize),
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed (no or bad `Content-Length`): close the connection.
    Invalid(Error),
}

/// Finds the first message in a stream buffer (RFC 3261 section 18.3: `Content-Length` is
/// mandatory on streams). Does not validate anything but the framing.
pub fn frame(buf: &[u8], max_head: usize) -> Frame {
    let lead = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if lead > 0 {
        return Frame::KeepAlive(lead);
    }
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > max_head {
            return Frame::Invalid(Error("header section too large"));
        }
        return Frame::Incomplete;
    };
    let mut content_length = None;
    let mut pos = memchr(b'\n', buf).map_or(head_end, |i| i + 1);
    let head_end = loop {
        match head_line(buf, pos) {
            HeadLine::End(h) => break h,
            // `find_head_end` saw the empty line, so the section cannot end early.
            HeadLine::Eof => return Frame::Incomplete,
            HeadLine::Fold { end } | HeadLine::Bad { end, .. } => pos = end,
            HeadLine::Field { name, colon, end } => {
                if HeaderName::from_bytes(&buf[name.0..name.1]) == HeaderName::ContentLength {
                    let Some(v) = parse_length(trim_ws(&buf[colon + 1..end])) else {
                        return Frame::Invalid(Error("malformed Content-Length"));
                    };
                    if content_length.is_some_and(|c| c != v) {
                        return Frame::Invalid(Error("conflicting Content-Length"));
                    }
                    content_length = Some(v);
                }
                pos = end;
            }
        }
    };
    match content_length {
        None => Frame::Invalid(Error("missing Content-Length on a stream transport")),
        Some(cl) => match head_end.checked_add(cl) {
            Some(total) if buf.len() >= total => Frame::Message(total),
            Some(_) => Frame::Incomplete,
            None => Frame::Invalid(Error("Content-Length too large")),
        },
    }
}

/// One line of a header section, as both the framer and the parser read it.
enum HeadLine {
    /// The empty line: the header section ends at this index.
    End(usize),
    /// No complete line here (the input ends first).
    Eof,
    /// A continuation line with no field before it.
    Fold { end: usize },
    /// Not `token *WSP ":"`; `colon` tells whether it has a colon at all.
    Bad { end: usize, colon: bool },
    /// A field: its name, the index of its colon, and the end of its line (folds included).
    Field { name: (usize, usize), colon: usize, end: usize },
}

/// Reads the header line that starts at `pos`. The framer and the parser both go through
/// here, so they always agree on which lines are which fields.
fn head_line(b: &[u8], pos: usize) -> HeadLine {
    let len = b.len();
    match b.get(pos..) {
        None | Some([]) => return HeadLine::Eof,
        Some([b'\n', ..]) => return HeadLine::End(pos + 1),
        Some([b'\r', b'\n', ..]) => return HeadLine::End(pos + 2),
        Some([b'\r']) => return HeadLine::Eof,
        Some([b' ' | b'\t', ..]) => return HeadLine::Fold { end: line_end(b, pos, len) },
        Some(_) => {}
    }
    // field-name: a token, then optional whitespace, then the colon.
    let mut i = pos;
    while i < len && crate::scan::is_token(b[i]) {
        i += 1;
    }
    let name_end = i;
    while i < len && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    let end = line_end(b, i, len);
    if name_end == pos || b.get(i) != Some(&b':') {
        return HeadLine::Bad { end, colon: memchr(b':', &b[pos..end]).is_some() };
    }
    HeadLine::Field { name: (pos, name_end), colon: i, end }
}

/// Index just past the empty line that ends the header section.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// End (past the line break) of the header line starting at `pos`, following folded lines.
fn line_end(buf: &[u8], mut pos: usize, limit: usize) -> usize {
    loop {
        match memchr(b'\n', &buf[pos..limit]) {
            Some(i) => {
                pos += i + 1;
                if !matches!(buf.get(pos), Some(b' ' | b'\t')) || pos >= limit {
                    return pos;
                }
            }
            None => return limit,
        }
    }
}

fn trim_ws(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = b {
        b = rest;
    }
    b
}

/// A Content-Length value (whitespace already trimmed): digits only, at most 2^32-1.
fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros are allowed (RFC 4475 wsinv uses them); the rest must fit 32 bits.
    let zeros = v.iter().take_while(|&&d| d == b'0').count().min(v.len() - 1);
    let v = &v[zeros..];
    if v.len() > 10 {
        return None;
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    u32::try_from(n).ok().map(|n| n as usize)
}

impl Message {
    /// Parses one message. For [`Framing::Datagram`] `buf` is the whole datagram; for
    /// [`Framing::Stream`] it is exactly the bytes [`frame`] reported.
    pub fn parse(buf: Bytes, framing: Framing) -> Result<Message, ParseError> {
        let msg = Self::split(buf, framing)?;
        let version = msg.version_status();
        if let Some(error) = msg.fault {
            let status = version.unwrap_or(400);
            return Err(ParseError { error, status, partial: Some(Box::new(msg)) });
        }
        if let Some(status) = version {
            let error = Error(if status == 505 { "SIP version not supported" } else { "malformed SIP-Version" });
            return Err(ParseError { error, status, partial: Some(Box::new(msg)) });
        }
        Ok(msg)
    }

    /// Splits start line, header fields and body in one pass over the header section.
    /// Structural faults that still leave a usable message are recorded in `fault`; only an
    /// unrecognisable start line fails outright.
    fn split(buf: Bytes, framing: Framing) -> Result<Message, ParseError> {
        let fail = |e: &'static str| ParseError { error: Error(e), status: 400, partial: None };
        let b = &buf[..];
        let len = b.len();
        let sl_end = memchr(b'\n', b).map_or(len, |i| i + 1);
        let mut fault = None;
        let mut fields = Vec::with_capacity(24);
        let mut content_length: Option<usize> = None;
        let mut pos = sl_end;
        // The header section ends after the empty line, or (a datagram only) at the end of
        // the input: RFC 4475's archive-style messages omit the empty line.
        let head_len = loop {
            let (name, colon, end) = match head_line(b, pos) {
                HeadLine::End(h) => break h,
                HeadLine::Eof if framing == Framing::Datagram => break len,
                HeadLine::Eof => return Err(fail("no end of header section")),
                HeadLine::Fold { end } => {
                    fault.get_or_insert(Error("header section starts with a folded line"));
                    pos = end;
                    continue;
                }
                HeadLine::Bad { end, colon } => {
                    fault.get_or_insert(Error(if colon {
                        "malformed header name"
                    } else {
                        "header line without a colon"
                    }));
                    pos = end;
                    continue;
                }
                HeadLine::Field { name, colon, end } => (name, colon, end),
            };
            let value = trim_ws(&b[colon + 1..end]);
            let value_start = if value.is_empty() { colon + 1 } else { value.as_ptr() as usize - b.as_ptr() as usize };
            let name_kind = HeaderName::from_bytes(&b[name.0..name.1]);
            if name_kind == HeaderName::ContentLength {
                match parse_length(value) {
                    Some(v) if content_length.is_none() => content_length = Some(v),
                    Some(_) => {
                        fault.get_or_insert(Error("more than one Content-Length"));
                    }
                    None => {
                        fault.get_or_insert(Error("malformed Content-Length"));
                    }
                }
            }
            fields.push(Field {
                name: name_kind,
                name_text: Span::orig(name.0, name.1),
                value: Span::orig(value_start, value_start + value.len()),
                line: Some(Span::orig(pos, end)),
            });
            pos = end;
        };

        if std::str::from_utf8(&b[..head_len]).is_err() {
            // Header text must be UTF-8 (RFC 3261 TEXT-UTF8). Keep a lossy copy so the
            // request can still be answered with a 400.
            let mut fixed = String::from_utf8_lossy(&b[..head_len]).into_owned().into_bytes();
            fixed.extend_from_slice(&b[head_len..]);
            let partial = Self::split(Bytes::from(fixed), framing).ok().map(Box::new);
            return Err(ParseError { error: Error("header section is not UTF-8"), status: 400, partial });
        }
        let sl_text = head_str(&b[..sl_end.min(head_len)]).trim_end_matches(['\r', '\n']);
        let start = parse_start_line(sl_text, &mut fault).ok_or_else(|| fail("malformed start line"))?;

        let body_start = head_len;
        let available = len - body_start;
        let body_len = match (content_length, framing) {
            (Some(cl), _) if cl <= available => cl,
            (Some(_), _) => {
                fault.get_or_insert(Error("Content-Length larger than the message"));
                available
            }
            (None, Framing::Datagram) => available,
            (None, Framing::Stream) => {
                fault.get_or_insert(Error("missing Content-Length on a stream transport"));
                available
            }
        };
        let total = body_start + body_len;
        let body = buf.slice(body_start..total);
        let buf = if total == len { buf } else { buf.slice(..total) };
        Ok(Message {
            buf,
            head_len,
            edits: String::new(),
            start,
            start_line: Some(Span::orig(0, sl_end.min(head_len))),
            fields,
            body,
            edited: false,
            fault,
            decoded: None,
        })
    }

    /// `None` for SIP/2.0; `505` for another well-formed `SIP/x.y`; `400` for anything else.
    fn version_status(&self) -> Option<u16> {
        let v = self.version();
        if v.eq_ignore_ascii_case("SIP/2.0") {
            return None;
        }
        let numbers = v.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")).and_then(|_| v[4..].split_once('.'));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        Some(if numbers.is_some_and(|(a, b)| digits(a) && digits(b)) { 505 } else { 400 })
    }

    /// Text behind a span.
    #[inline]
    pub(crate) fn text(&self, s: Span) -> &str {
        if s.start & EDIT != 0 {
            self.edits.get((s.start & !EDIT) as usize..s.end as usize).unwrap_or("")
        } else {
            let bytes = &self.buf[..self.head_len];
            let b = bytes.get(s.start as usize..s.end as usize).unwrap_or(b"");
            head_str(b)
        }
    }

    /// The value span of the first Via field.
    fn first_via_span(&self) -> Option<Span> {
        self.fields.iter().find(|f| f.name == HeaderName::Via).map(|f| f.value)
    }

    /// The top Via decoded earlier, if the first Via field is still the one it came from.
    pub(crate) fn cached_top_via(&self) -> Option<crate::Via<'_>> {
        let c = self.decoded.as_ref()?.top_via.as_ref()?;
        if self.first_via_span() != Some(c.field) {
            return None;
        }
        let part = |(a, b): (u32, u32)| self.text(Span { start: c.field.start + a, end: (c.field.start & !EDIT) + b });
        let l = &c.layout;
        Some(crate::Via {
            protocol_name: part(l.protocol_name),
            protocol_version: part(l.protocol_version),
            transport: part(l.transport),
            host: match l.host {
                LayoutHost::Domain(a, b) => crate::Host::Domain(part((a, b))),
                LayoutHost::Ipv4(a) => crate::Host::Ipv4(a),
                LayoutHost::Ipv6(a) => crate::Host::Ipv6(a),
            },
            port: l.port,
            params: crate::scan::Params::from_raw(part(l.params)),
            branch: l.branch.map(part),
        })
    }

    /// Remembers the top Via, laid out within the current first Via field's value.
    pub(crate) fn remember_top_via(&mut self, layout: ViaLayout) {
        let top_via = self.first_via_span().map(|field| TopVia { field, layout });
        self.decoded_mut().top_via = top_via;
        debug_assert!(
            top_via.is_none() || self.cached_top_via() == Some(self.parse_top_via().expect("cached Via parses")),
            "top Via cache disagrees with the parser"
        );
        debug_assert!(
            top_via.is_none() || self.cached_top_branch() == Some(self.parse_top_via().ok().and_then(|v| v.branch())),
            "top Via branch cache disagrees with the parser"
        );
    }

    /// The top Via's branch decoded earlier (`Some(None)`: that Via has none), if the first Via
    /// field is still the one it came from.
    pub(crate) fn cached_top_branch(&self) -> Option<Option<&str>> {
        let c = self.decoded.as_ref()?.top_via.as_ref()?;
        if self.first_via_span() != Some(c.field) {
            return None;
        }
        Some(
            c.layout
                .branch
                .map(|(a, b)| self.text(Span { start: c.field.start + a, end: (c.field.start & !EDIT) + b })),
        )
    }

    /// The top Via's `branch`: from what [`crate::inspect`] decoded when the top Via is
    /// unchanged, else by decoding it.
    pub fn top_via_branch(&self) -> Result<Option<&str>, Error> {
        match self.cached_top_branch() {
            Some(branch) => Ok(branch),
            None => self.top_via().map(|v| v.branch()),
        }
    }

    /// The CSeq decoded earlier, if the one CSeq field is still the one it came from.
    pub(crate) fn cached_cseq(&self) -> Option<crate::CSeq<'_>> {
        let (span, seq, (a, b)) = self.decoded.as_ref()?.cseq?;
        if self.single_span(HeaderName::CSeq) != Some(span) {
            return None;
        }
        let method = self.text(Span { start: span.start + a, end: (span.start & !EDIT) + b });
        Some(crate::CSeq { seq, method: Method::parse(method) })
    }

    /// Where the method of `cseq` (the decoded single CSeq header) lies in its field's value:
    /// it is the value's last token, only whitespace after it.
    pub(crate) fn cseq_layout(&self, cseq: &crate::CSeq<'_>) -> Option<(u32, (u32, u32))> {
        let value = self.text(self.single_span(HeaderName::CSeq)?);
        let trimmed = crate::scan::trim_lws(value);
        let end = trimmed.as_ptr() as usize - value.as_ptr() as usize + trimmed.len();
        let start = end.checked_sub(cseq.method.as_str().len())?;
        (value.get(start..end) == Some(cseq.method.as_str()))
            .then_some((cseq.seq, (u32::try_from(start).ok()?, u32::try_from(end).ok()?)))
    }

    /// The Call-ID checked earlier, if the one Call-ID field is still the one checked.
    pub(crate) fn cached_call_id(&self) -> Option<&str> {
        let span = self.decoded.as_ref()?.call_id?;
        (self.single_span(HeaderName::CallId) == Some(span)).then(|| self.text(span))
    }

    /// Remembers that the one Call-ID field is well formed (as [`Message::call_id`] found it).
    pub(crate) fn remember_call_id(&mut self) {
        let Some(field) = self.single_span(HeaderName::CallId) else { return };
        self.decoded_mut().call_id = Some(field);
        debug_assert_eq!(self.cached_call_id().map(Ok), Some(self.call_id()), "Call-ID cache disagrees");
    }

    /// Remembers the decoded CSeq (from [`Message::cseq_layout`]).
    pub(crate) fn remember_cseq(&mut self, (seq, method): (u32, (u32, u32))) {
        let Some(field) = self.single_span(HeaderName::CSeq) else { return };
        self.decoded_mut().cseq = Some((field, seq, method));
        debug_assert_eq!(
            self.cached_cseq(),
            self.single_span(HeaderName::CSeq).and_then(|s| crate::CSeq::parse(self.text(s)).ok()),
            "CSeq cache disagrees with the parser"
        );
    }

    fn decoded_mut(&mut self) -> &mut Decoded {
        std::sync::Arc::make_mut(self.decoded.get_or_insert_with(Default::default))
    }

    /// The value span of the one field named `name` (none when absent or repeated).
    fn single_span(&self, name: HeaderName) -> Option<Span> {
        let mut it = self.fields.iter().filter(|f| f.name == name);
        let f = it.next()?;
        if it.next().is_some() { None } else { Some(f.value) }
    }

    /// The To tag decoded earlier for the To field whose value has this span: `Some(None)` when
    /// that To parsed and has no tag.
    pub(crate) fn cached_to_tag(&self, field: Span) -> Option<Option<&str>> {
        let (span, tag) = self.decoded.as_ref()?.to?;
        if span != field {
            return None;
        }
        Some(tag.map(|(a, b)| self.text(Span { start: span.start + a, end: (span.start & !EDIT) + b })))
    }

    /// The To tag: from what [`crate::inspect`] decoded when the To field is unchanged, else
    /// by decoding the To header.
    pub fn to_tag(&self) -> Result<Option<&str>, Error> {
        if let Some(field) = self.single_span(HeaderName::To)
            && let Some(tag) = self.cached_to_tag(field)
        {
            return Ok(tag);
        }
        self.to().map(|to| to.tag())
    }

    /// Where `tag` (the tag of the decoded single To header) lies in the To field's value.
    pub(crate) fn to_tag_layout(&self, tag: Option<&str>) -> Option<Option<(u32, u32)>> {
        let value = self.text(self.single_span(HeaderName::To)?);
        match tag {
            None => Some(None),
            Some(t) => {
                let start = (t.as_ptr() as usize).checked_sub(value.as_ptr() as usize)?;
                let end = start + t.len();
                (end <= value.len()).then_some(Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?)))
            }
        }
    }

    /// Remembers the decoded To's tag layout (from [`Message::to_tag_layout`]).
    pub(crate) fn remember_to_tag(&mut self, tag: Option<(u32, u32)>) {
        let Some(field) = self.single_span(HeaderName::To) else { return };
        self.decoded_mut().to = Some((field, tag));
        debug_assert_eq!(self.to_tag(), self.to().map(|to| to.tag()), "To tag cache disagrees with the parser");
    }

    /// The layout of `via`, which must have been decoded from the first element of the first
    /// Via field (as [`Message::vias`] yields it), for [`Message::remember_top_via`].
    pub(crate) fn top_via_layout(&self, via: &crate::Via<'_>) -> Option<ViaLayout> {
        ViaLayout::of(self.text(self.first_via_span()?), via)
    }

    fn push_edit(&mut self, s: &str) -> Span {
        let start = self.edits.len();
        self.edits.push_str(s);
        Span::edit(start, self.edits.len())
    }

    // ---- start line ----

    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }
    pub fn is_response(&self) -> bool {
        !self.is_request()
    }
    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method<'_>> {
        match self.start {
            Start::Request { method, .. } => Some(Method::parse(self.text(method))),
            Start::Response { .. } => None,
        }
    }
    /// The Request-URI as written, `None` for a response.
    pub fn request_uri_str(&self) -> Option<&str> {
        match self.start {
            Start::Request { uri, .. } => Some(self.text(uri)),
            Start::Response { .. } => None,
        }
    }
    /// The Request-URI, parsed.
    pub fn request_uri(&self) -> Option<Result<crate::Uri<'_>, Error>> {
        self.request_uri_str().map(crate::uri::parse_uri)
    }
    pub fn version(&self) -> &str {
        match self.start {
            Start::Request { version, .. } | Start::Response { version, .. } => self.text(version),
        }
    }
    /// The status code, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { code, .. } => Some(code),
            Start::Request { .. } => None,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self.start {
            Start::Response { reason, .. } => Some(self.text(reason)),
            Start::Request { .. } => None,
        }
    }

    // ---- headers, raw ----

    /// Every header field in order: (name as written, value as written, folding included).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.fields.iter().map(|f| (self.text(f.name_text), self.text(f.value)))
    }
    /// Every header field with its canonical name.
    pub fn header_fields(&self) -> impl Iterator<Item = (HeaderName, &str)> + '_ {
        self.fields.iter().map(|f| (f.name, self.text(f.value)))
    }
    /// The values of every field with this name (compact and long forms alike), in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.fields.iter().filter(move |f| f.name == name).map(|f| self.text(f.value))
    }
    /// The first value of a header by canonical name.
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.header_values(name).next()
    }
    /// The first value of any header by its name, e.g. an `X-` header (case-insensitive;
    /// compact forms are recognised).
    pub fn header_by_name(&self, name: &str) -> Option<&str> {
        let want = HeaderName::from_bytes(name.as_bytes());
        self.fields
            .iter()
            .find(|f| {
                f.name == want && (want != HeaderName::Other || self.text(f.name_text).eq_ignore_ascii_case(name))
            })
            .map(|f| self.text(f.value))
    }
    /// Number of fields with this name.
    pub fn count(&self, name: HeaderName) -> usize {
        self.fields.iter().filter(|f| f.name == name).count()
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The first structural fault recorded while splitting (only set on a `partial`).
    pub fn fault(&self) -> Option<Error> {
        self.fault
    }

    // ---- building and editing ----

    /// A new request with no headers yet.
    pub fn new_request(method: &str, uri: &str) -> Message {
        let mut m = Message::empty();
        let method = m.push_edit(method);
        let uri = m.push_edit(uri);
        let version = m.push_edit("SIP/2.0");
        m.start = Start::Request { method, uri, version };
        m
    }

    /// A new response with no headers yet.
    pub fn new_response(code: u16, reason: &str) -> Message {
        let mut m = Message::empty();
        let version = m.push_edit("SIP/2.0");
        let reason = m.push_edit(reason);
        m.start = Start::Response { version, code, reason };
        m
    }

    fn empty() -> Message {
        // Room for a typical message built from scratch (a B-leg INVITE: start line, Via and a
        // dozen fields, Contact and User-Agent among them), so building it does not reallocate.
        Message::empty_with_capacity(512, 16)
    }

    fn empty_with_capacity(text: usize, fields: usize) -> Message {
        Message {
            buf: Bytes::new(),
            head_len: 0,
            edits: String::with_capacity(text),
            start: Start::Response { version: Span::EMPTY, code: 0, reason: Span::EMPTY },
            start_line: None,
            fields: Vec::with_capacity(fields),
            body: Bytes::new(),
            edited: true,
            fault: None,
            decoded: None,
        }
    }

    /// A response to this request per RFC 3261 section 8.2.6: Via (all), From, To, Call-ID and
    /// CSeq copied; a To tag is added when given and the To has none (never on 100).
    pub fn response_to(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        use HeaderName as H;
        let copied = |f: &&Field| matches!(f.name, H::Via | H::From | H::To | H::CallId | H::CSeq);
        // Sized up front: one allocation each for the text and the field list, not a run of
        // reallocations as the fields are pushed.
        let (mut count, mut text) = (0, "SIP/2.0".len() + reason.len() + to_tag.map_or(0, |t| t.len() + 5));
        for f in self.fields.iter().filter(copied) {
            count += 1;
            text += f.name.as_str().len() + (f.value.end - (f.value.start & !EDIT)) as usize;
        }
        // Room beyond the copied fields for the few a response usually gets next (Server,
        // Contact, Content-Type, Allow, ...): growing both buffers later would copy them.
        let mut r = Message::empty_with_capacity(text + RESPONSE_ROOM.0, count + RESPONSE_ROOM.1);
        let version = r.push_edit("SIP/2.0");
        let reason = r.push_edit(reason);
        r.start = Start::Response { version, code, reason };
        for f in self.fields.iter().filter(copied) {
            let value = self.text(f.value);
            if f.name == H::To
                && code != 100
                && let Some(tag) = to_tag
                && match self.cached_to_tag(f.value) {
                    Some(tag) => tag.is_none(),
                    None => crate::headers::NameAddr::parse(value).is_ok_and(|t| t.tag().is_none()),
                }
            {
                let name_text = r.push_edit(H::To.as_str());
                let start = r.edits.len();
                r.edits.push_str(value);
                r.edits.push_str(";tag=");
                r.edits.push_str(tag);
                let value = Span::edit(start, r.edits.len());
                r.fields.push(Field { name: H::To, name_text, value, line: None });
            } else {
                r.push_header(f.name, value);
            }
        }
        r
    }

    /// Appends a header field.
    pub fn push_header(&mut self, name: HeaderName, value: &str) {
        let field = self.new_field(name, name.as_str(), value);
        self.fields.push(field);
    }

    /// Appends a header field whose value `write` puts straight into the message's text: a
    /// value made of several parts costs no string of its own and no formatting machinery.
    pub fn push_header_with(&mut self, name: HeaderName, write: impl FnOnce(&mut String)) {
        self.edited = true;
        let name_text = self.push_edit(name.as_str());
        let start = self.edits.len();
        write(&mut self.edits);
        let value = Span::edit(start, self.edits.len());
        self.fields.push(Field { name, name_text, value, line: None });
    }

    /// Appends a header field by name (for extension headers such as `X-Telnyx-Token`).
    pub fn push_header_named(&mut self, name: &str, value: &str) {
        let field = self.new_field(HeaderName::from_bytes(name.as_bytes()), name, value);
        self.fields.push(field);
    }

    /// Inserts a field above the first field with the same name (or at the top when none):
    /// how a proxy adds its Via or Record-Route (RFC 3261 sections 16.6 and 16.6 step 4).
    pub fn prepend_header(&mut self, name: HeaderName, value: &str) {
        let at = self.fields.iter().position(|f| f.name == name).unwrap_or(0);
        let field = self.new_field(name, name.as_str(), value);
        self.fields.insert(at, field);
    }

    /// [`Message::prepend_header`] with the value written in place, as
    /// [`Message::push_header_with`] does.
    pub fn prepend_header_with(&mut self, name: HeaderName, write: impl FnOnce(&mut String)) {
        self.edited = true;
        let at = self.fields.iter().position(|f| f.name == name).unwrap_or(0);
        let name_text = self.push_edit(name.as_str());
        let start = self.edits.len();
        write(&mut self.edits);
        let value = Span::edit(start, self.edits.len());
        self.fields.insert(at, Field { name, name_text, value, line: None });
    }

    /// Replaces every field of this name with one field holding `value` (at the first one's
    /// place, or appended).
    pub fn set_header(&mut self, name: HeaderName, value: &str) {
        let at = self.fields.iter().position(|f| f.name == name);
        self.remove_headers(name);
        let field = self.new_field(name, name.as_str(), value);
        match at {
            Some(i) => self.fields.insert(i, field),
            None => self.fields.push(field),
        }
    }

    /// Removes every field with this name; returns how many were removed.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| f.name != name);
        let n = before - self.fields.len();
        if n > 0 {
            self.edited = true;
        }
        n
    }

    /// Removes an extension header by name (case-insensitive).
    pub fn remove_header_named(&mut self, name: &str) -> usize {
        let want = HeaderName::from_bytes(name.as_bytes());
        let before = self.fields.len();
        let keep: Vec<bool> = self
            .fields
            .iter()
            .map(|f| {
                !(f.name == want && (want != HeaderName::Other || self.text(f.name_text).eq_ignore_ascii_case(name)))
            })
            .collect();
        let mut k = keep.iter();
        self.fields.retain(|_| *k.next().unwrap_or(&true));
        let n = before - self.fields.len();
        if n > 0 {
            self.edited = true;
        }
        n
    }

    /// Removes the first value of a multi-valued header (the top Via when a response is passed
    /// upstream), rewriting the field when it carried several comma-separated values.
    pub fn remove_first_value(&mut self, name: HeaderName) -> bool {
        let Some(i) = self.fields.iter().position(|f| f.name == name) else { return false };
        let value = self.text(self.fields[i].value);
        let mut parts = crate::scan::split_list(value);
        parts.next();
        let rest: Vec<&str> = parts.collect();
        if rest.is_empty() {
            self.fields.remove(i);
        } else {
            let joined = rest.join(", ");
            let name_text = self.fields[i].name_text;
            let value = self.push_edit(&joined);
            self.fields[i] = Field { name, name_text, value, line: None };
        }
        self.edited = true;
        true
    }

    /// Replaces the first value of a multi-valued header, keeping the rest of its field.
    pub fn replace_first_value(&mut self, name: HeaderName, value: &str) -> bool {
        let Some(i) = self.fields.iter().position(|f| f.name == name) else { return false };
        let old = self.text(self.fields[i].value);
        let mut parts = crate::scan::split_list(old);
        parts.next();
        let name_text = self.fields[i].name_text;
        let mut rest = parts.peekable();
        let value = if rest.peek().is_none() {
            // The field held one value (the usual Via): the new one is the whole field.
            self.push_edit(value)
        } else {
            let mut joined = String::with_capacity(old.len() + value.len());
            joined.push_str(value);
            for p in rest {
                joined.push_str(", ");
                joined.push_str(p);
            }
            self.push_edit(&joined)
        };
        self.fields[i] = Field { name, name_text, value, line: None };
        self.edited = true;
        true
    }

    /// Decrements Max-Forwards (adding `70` when absent, RFC 3261 section 16.6 step 3).
    /// Returns the new value, or `None` when it was already 0 (answer `483`) or malformed.
    pub fn decrement_max_forwards(&mut self) -> Option<u8> {
        let next = match self.max_forwards() {
            Ok(Some(0)) | Err(_) => return None,
            Ok(Some(n)) => n - 1,
            Ok(None) => 70,
        };
        self.set_header(HeaderName::MaxForwards, itoa_u32(u32::from(next)).as_str());
        Some(next)
    }

    /// Replaces the Request-URI (requests only).
    pub fn set_request_uri(&mut self, uri: &str) {
        if let Start::Request { method, version, .. } = self.start {
            let uri = self.push_edit(uri);
            self.start = Start::Request { method, uri, version };
            self.start_line = None;
            self.edited = true;
        }
    }

    /// Replaces the body and its Content-Type; Content-Length follows at serialization.
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&str>) {
        self.body = body;
        match content_type {
            Some(ct) => self.set_header(HeaderName::ContentType, ct),
            None => {
                self.remove_headers(HeaderName::ContentType);
            }
        }
        self.edited = true;
    }

    fn new_field(&mut self, name: HeaderName, name_text: &str, value: &str) -> Field {
        self.edited = true;
        let name_text = self.push_edit(name_text);
        let value = self.push_edit(value);
        Field { name, name_text, value, line: None }
    }

    /// `true` while the message is exactly as parsed.
    pub fn is_untouched(&self) -> bool {
        !self.edited
    }

    /// The message on the wire. Untouched: the original bytes. Edited: the start line and
    /// untouched fields copied verbatim, new fields as `Name: value`, `Content-Length` set to the
    /// body's length.
    pub fn to_bytes(&self) -> Bytes {
        if !self.edited {
            return self.buf.clone();
        }
        // Every byte written comes from the original head, the edits or the body, plus at most
        // `: ` and CRLF per field and the start line's and Content-Length's own: one allocation.
        let mut out =
            BytesMut::with_capacity(self.head_len + self.edits.len() + self.body.len() + 4 * self.fields.len() + 64);
        // A datagram may end without line breaks after its last line; copies get one back.
        let put_line = |out: &mut BytesMut, line: &str| {
            out.put_slice(line.as_bytes());
            if !line.ends_with('\n') {
                out.put_slice(b"\r\n");
            }
        };
        match (self.start_line, &self.start) {
            (Some(l), _) => put_line(&mut out, self.text(l)),
            (None, Start::Request { method, uri, version }) => {
                for (part, sep) in [(method, b" "), (uri, b" "), (version, b"\r")] {
                    out.put_slice(self.text(*part).as_bytes());
                    out.put_slice(sep);
                }
                out.put_u8(b'\n');
            }
            (None, Start::Response { version, code, reason }) => {
                out.put_slice(self.text(*version).as_bytes());
                out.put_u8(b' ');
                out.put_slice(itoa_u32(u32::from(*code)).as_bytes());
                out.put_u8(b' ');
                out.put_slice(self.text(*reason).as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        let mut wrote_length = false;
        for f in &self.fields {
            if f.name == HeaderName::ContentLength {
                if wrote_length {
                    continue;
                }
                wrote_length = true;
                out.put_slice(self.text(f.name_text).as_bytes());
                out.put_slice(b": ");
                out.put_slice(itoa_u32(self.body.len() as u32).as_bytes());
                out.put_slice(b"\r\n");
                continue;
            }
            match f.line {
                Some(l) => put_line(&mut out, self.text(l)),
                None => {
                    out.put_slice(self.text(f.name_text).as_bytes());
                    out.put_slice(b": ");
                    out.put_slice(self.text(f.value).as_bytes());
                    out.put_slice(b"\r\n");
                }
            }
        }
        if !wrote_length {
            out.put_slice(b"Content-Length: ");
            out.put_slice(itoa_u32(self.body.len() as u32).as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Text of the (already UTF-8 checked) header section.
#[allow(unsafe_code)]
#[inline]
fn head_str(b: &[u8]) -> &str {
    // The header section is checked to be UTF-8 once in `parse_head`, and every span into it
    // starts and ends at an ASCII delimiter (line break, colon, space, tab) or the section's
    // ends, so each slice is UTF-8 too. Re-checking here would cost a scan per access on the
    // hottest path; debug builds still verify.
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: see above.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// `s` split around its first `byte` (ASCII), as `str::split_once` with a char: a plain scan,
/// since the start line's parts are a few bytes to a few dozen and the char searcher's setup
/// cost more than the search.
fn split_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == byte)?;
    // An ASCII byte's position is a char boundary on both sides.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// `s` split around its last `byte` (ASCII), as `str::rsplit_once` with a char.
fn rsplit_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = s.bytes().rposition(|b| b == byte)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

fn parse_start_line(s: &str, fault: &mut Option<Error>) -> Option<Start> {
    let off = |part: &str| part.as_ptr() as usize - s.as_ptr() as usize;
    let span = |part: &str| Span::orig(off(part), off(part) + part.len());
    if let Some(rest) = s.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")).map(|_| s) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest) = split_at_byte(rest, b' ')?;
        // No space after the code: an empty reason at the end of the line (a slice of the
        // line itself, so its offset stays meaningful).
        let (code, reason) = split_at_byte(rest, b' ').unwrap_or((rest, &rest[rest.len()..]));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = code.parse().ok()?;
        if !(100..=699).contains(&code) {
            return None;
        }
        if reason.bytes().any(|b| b < 0x20 && b != b'\t') {
            return None;
        }
        return Some(Start::Response { version: span(version), code, reason: span(reason) });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces only. The version is
    // taken after the last space so that a URI with stray spaces is a 400, not a 505.
    let (method, rest) = split_at_byte(s, b' ')?;
    if !crate::scan::is_token_str(method) {
        return None;
    }
    let (uri, version) = rsplit_at_byte(rest, b' ')?;
    if uri.is_empty() || version.is_empty() || uri.as_bytes().contains(&b' ') {
        fault.get_or_insert(Error("malformed Request-Line"));
    }
    if !version.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        fault.get_or_insert(Error("malformed SIP-Version"));
    }
    Some(Start::Request { method: span(method), uri: span(uri), version: span(version) })
}

/// Decimal formatting without the formatting machinery (hot path: Content-Length, status).
pub(crate) fn itoa_u32(mut n: u32) -> ItoaBuf {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    ItoaBuf { buf, start: i }
}

/// Appends a number in decimal, as `Display` writes it, without the formatting machinery.
pub fn push_u32(out: &mut String, n: u32) {
    out.push_str(itoa_u32(n).as_str());
}

/// Appends `n` in lowercase hexadecimal, zero-padded to at least `width` digits: what
/// `{:0width$x}` writes, without the formatting machinery (tags, branches, identifiers).
pub fn push_hex(out: &mut String, n: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [b'0'; 16];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push('0');
    }
    // Only ASCII hex digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends an IPv4 address in dotted-quad form without the formatting machinery (hot path:
/// `received` on every request, sent-by in transaction keys).
pub(crate) fn push_ipv4(out: &mut String, a: std::net::Ipv4Addr) {
    // Written into one stack buffer and appended once.
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    // Only ASCII digits and dots were written.
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
}

/// Appends an IP address as `received` carries it: IPv4 dotted, IPv6 in its canonical text
/// (RFC 5952, what `Display` writes; rare enough for the formatting machinery).
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => push_ipv4(out, a),
        std::net::IpAddr::V6(a) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

/// Appends `ip:port` as `SocketAddr`'s `Display` writes it (IPv6 through `Display` itself:
/// brackets, scope).
pub fn push_socket_addr(out: &mut String, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            push_ipv4(out, *a.ip());
            out.push(':');
            out.push_str(itoa_u32(u32::from(a.port())).as_str());
        }
        std::net::SocketAddr::V6(a) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

/// Appends a host as written in a URI or sent-by (IPv6 in brackets), as `Display` does.
pub(crate) fn push_host(out: &mut String, host: &crate::Host<'_>) {
    match *host {
        crate::Host::Domain(d) => out.push_str(d),
        crate::Host::Ipv4(a) => push_ipv4(out, a),
        crate::Host::Ipv6(a) => {
            out.push('[');
            push_ip(out, std::net::IpAddr::V6(a));
            out.push(']');
        }
    }
}

pub(crate) struct ItoaBuf {
    buf: [u8; 10],
    start: usize,
}

impl ItoaBuf {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+12125551212@gw.example.net SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc, SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKdef\r\n\
        Max-Forwards: 2\r\n\
        f: <sip:alice@pbx.example.com>;tag=1\r\n\
        t: <sip:+12125551212@gw.example.net>\r\n\
        i: c1@pbx\r\n\
        CSeq: 1 INVITE\r\n\
        X-Telnyx-Token: secret\r\n\
        Subject: folded\r\n  line\r\n\
        l: 4\r\n\r\nv=0\n";

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::from(s.to_owned()), Framing::Datagram).unwrap()
    }

    #[test]
    fn untouched_is_byte_exact() {
        let m = parse(INVITE);
        assert!(m.is_untouched());
        assert_eq!(&m.to_bytes()[..], INVITE.as_bytes());
        assert_eq!(m.header(HeaderName::Subject), Some("folded\r\n  line"));
        assert_eq!(m.header_by_name("x-telnyx-token"), Some("secret"));
        assert_eq!(m.header_by_name("i"), Some("c1@pbx"));
    }

    #[test]
    fn proxy_edits_keep_untouched_lines() {
        let mut m = parse(INVITE);
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew");
        m.prepend_header(HeaderName::RecordRoute, "<sip:192.0.2.1;lr>");
        assert_eq!(m.decrement_max_forwards(), Some(1));
        m.remove_header_named("X-Telnyx-Token");
        let out = m.to_bytes();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("INVITE sip:+12125551212@gw.example.net SIP/2.0\r\nRecord-Route: <sip:192.0.2.1;lr>\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew\r\nv: SIP/2.0/UDP 10.0.0.5"), "{text}");
        assert!(text.contains("\r\nSubject: folded\r\n  line\r\n"));
        assert!(text.contains("\r\nMax-Forwards: 1\r\n"));
        assert!(!text.contains("X-Telnyx"));
        assert!(text.ends_with("l: 4\r\n\r\nv=0\n"));
        let back = parse(text);
        assert_eq!(back.vias().count(), 3);
        assert_eq!(back.top_via().unwrap().branch(), Some("z9hG4bKnew"));
    }

    #[test]
    fn removing_the_top_via_of_a_list() {
        let mut m = parse(INVITE);
        assert!(m.remove_first_value(HeaderName::Via));
        assert_eq!(m.header(HeaderName::Via), Some("SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKdef"));
        assert!(m.remove_first_value(HeaderName::Via));
        assert!(!m.remove_first_value(HeaderName::Via));
        assert_eq!(m.count(HeaderName::Via), 0);
    }

    #[test]
    fn max_forwards_floor_and_default() {
        let mut m = parse(&INVITE.replace("Max-Forwards: 2", "Max-Forwards: 0"));
        assert_eq!(m.decrement_max_forwards(), None);
        let mut m = parse(&INVITE.replace("Max-Forwards: 2\r\n", ""));
        assert_eq!(m.decrement_max_forwards(), Some(70));
    }

    #[test]
    fn body_and_uri_edits() {
        let mut m = parse(INVITE);
        m.set_request_uri("sip:+12125551212@carrier.example.org;user=phone");
        m.set_body(Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"), Some("application/sdp"));
        let back = parse(std::str::from_utf8(&m.to_bytes()).unwrap());
        assert_eq!(back.request_uri_str(), Some("sip:+12125551212@carrier.example.org;user=phone"));
        assert_eq!(back.content_length(), Ok(Some(31)));
        assert_eq!(back.body().len(), 31);
        assert_eq!(back.content_type().unwrap().unwrap().subtype, "sdp");
    }

    #[test]
    fn built_from_scratch() {
        let mut r = Message::new_request("OPTIONS", "sip:pbx.example.com");
        r.push_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1");
        r.push_header(HeaderName::CSeq, "1 OPTIONS");
        r.push_header_named("X-Probe", "1");
        let text = r.to_string();
        assert_eq!(
            text,
            "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\nX-Probe: 1\r\nContent-Length: 0\r\n\r\n"
        );
        let resp = parse(&text).response_to(200, "OK", Some("t1"));
        assert!(
            resp.to_string()
                .starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n")
        );
    }

    #[test]
    fn writers_match_display() {
        for (n, w) in [(0u64, 0), (0, 4), (0xabc, 0), (0xabc, 8), (u64::MAX, 0), (u64::MAX, 12), (0x1f, 16)] {
            let mut s = String::new();
            push_hex(&mut s, n, w);
            assert_eq!(s, format!("{n:0w$x}"));
        }
        for a in ["0.0.0.0", "10.0.0.5", "192.168.100.255", "255.255.255.255", "1.20.100.9"] {
            let mut s = String::new();
            push_ipv4(&mut s, a.parse().unwrap());
            assert_eq!(s, a);
        }
        for n in [0u32, 7, 10, 65535, u32::MAX] {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for a in [
            "10.0.0.5:5060",
            "255.255.255.255:65535",
            "0.0.0.0:0",
            "[::1]:5061",
            "[2001:db8::7%3]:1",
            "[::ffff:1.2.3.4]:9",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, addr);
            assert_eq!(s, addr.to_string());
            let mut s = String::new();
            push_ip(&mut s, addr.ip());
            assert_eq!(s, addr.ip().to_string());
        }
    }

    #[test]
    fn header_written_in_place() {
        let mut r = Message::new_request("OPTIONS", "sip:pbx.example.com");
        r.push_header_with(HeaderName::CSeq, |v| {
            push_u32(v, 12);
            v.push_str(" OPTIONS");
        });
        assert_eq!(r.header(HeaderName::CSeq), Some("12 OPTIONS"));
        assert!(r.to_string().contains("\r\nCSeq: 12 OPTIONS\r\n"));
    }

    #[test]
    fn stream_framing() {
        let two = format!("\r\n\r\n{INVITE}{INVITE}");
        let b = two.as_bytes();
        assert_eq!(frame(b, 4096), Frame::KeepAlive(4));
        assert_eq!(frame(&b[4..], 4096), Frame::Message(INVITE.len()));
        assert_eq!(frame(&b[4..INVITE.len()], 4096), Frame::Incomplete);
        assert_eq!(frame(&b[4..40], 4096), Frame::Incomplete);
        assert!(matches!(frame(&[b'A'; 5000], 4096), Frame::Invalid(_)));
    }
}
