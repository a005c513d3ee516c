//! Property tests for the SIP message core.
//!
//! 1. Generated requests and responses (random methods, URIs, header-name case and compact forms,
//!    folded values, binary bodies) parse, serialize back byte-exact, survive a forced
//!    re-serialization and a rebuild through the builder API, and their typed values decode to
//!    what was generated.
//! 2. Random edit sequences serialize to what a simple model of the header list predicts.
//! 3. Several messages and keep-alives in one byte stream, fed in random segments, are cut back
//!    apart by `sip::frame`.
//! 4. Arbitrary bytes and mutated messages never make the parser, framer, validator, typed
//!    accessors, edits or serializer panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::string::string_regex;
use sip::{Contacts, Frame, Framing, HeaderName, Message, NameAddr, Policy, Uri, Verdict};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

/// Separators between a header name and its value (`HCOLON` allows whitespace on both sides).
const SEPS: &[&str] = &[": ", ":", " : ", ":\t", ":   "];
/// Separators in front of a header parameter.
const PSEPS: &[&str] = &[";", " ;", " ; ", ";\t"];
/// Separators between the values of a list header written in one field.
const JOINERS: &[&str] = &[",", ", ", " , ", ",\t"];

fn re(pattern: &str) -> impl Strategy<Value = String> + use<> {
    string_regex(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

/// RFC 3261 `token`: alphanum and `-.!%*_+`'~`.
fn token(max: usize) -> impl Strategy<Value = String> {
    re(&format!("[A-Za-z0-9.!%*_+`'~-]{{1,{max}}}"))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(KNOWN_METHODS).prop_map(str::to_owned), 1 => token(12)]
}

/// Header-safe text: no CR/LF, no leading or trailing whitespace, some UTF-8, sometimes empty.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        8 => re("[!-~é中😀]([ -~\té中😀]{0,30}[!-~é中😀])?"),
    ]
}

fn reason() -> impl Strategy<Value = String> {
    re("[ -~\té中]{0,20}")
}

fn domain() -> impl Strategy<Value = String> {
    (
        vec(re("[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?"), 0..3),
        re("[a-zA-Z]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?"),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(mut labels, top, dot)| {
            labels.push(top);
            let mut d = labels.join(".");
            if dot {
                d.push('.');
            }
            d
        })
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop::array::uniform8(prop_oneof![Just(0u16), Just(0xffffu16), any::<u16>()]).prop_map(Ipv6Addr::from)
}

/// A host as written (IPv6 in brackets), in the canonical form `Host`'s `Display` gives back.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => domain(),
        1 => any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string()),
        1 => ipv6().prop_map(|a| format!("[{a}]")),
    ]
}

/// A user part: `unreserved` characters and `%HH` escapes.
fn user() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            6 => re("[A-Za-z0-9_.!~*'()-]"),
            1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
            1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        ],
        1..10,
    )
    .prop_map(|parts| parts.concat())
}

fn uri_param() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["udp", "tcp", "tls", "TCP", "sctp", "ws"][..]).prop_map(|t| format!(";transport={t}")),
        Just(";lr".to_owned()),
        Just(";user=phone".to_owned()),
        (re("[A-Za-z0-9_.!~*'()-]{1,8}"), prop::option::of(re("[A-Za-z0-9_.!~*'()-]{1,8}"))).prop_map(|(n, v)| {
            match v {
                Some(v) => format!(";{n}={v}"),
                None => format!(";{n}"),
            }
        }),
    ]
}

/// A sip/sips URI; `with_params` adds URI parameters (only valid inside `<>` or as Request-URI).
fn sip_uri(with_params: bool) -> BoxedStrategy<String> {
    (
        prop::bool::weighted(0.2),
        prop::option::weighted(0.7, user()),
        host(),
        prop::option::weighted(0.4, any::<u16>()),
        vec(uri_param(), 0..if with_params { 3 } else { 1 }),
    )
        .prop_map(|(secure, user, host, port, params)| {
            let mut s = String::from(if secure { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            s.push_str(&params.concat());
            s
        })
        .boxed()
}

#[derive(Clone, Debug)]
struct ViaGen {
    text: String,
    branch: String,
}

fn via() -> BoxedStrategy<ViaGen> {
    let param = prop_oneof![
        Just("rport".to_owned()),
        any::<u16>().prop_map(|p| format!("rport={p}")),
        any::<[u8; 4]>().prop_map(|a| format!("received={}", Ipv4Addr::from(a))),
        ipv6().prop_map(|a| format!("received=[{a}]")),
        (token(6), token(8)).prop_map(|(n, v)| format!("x-{n}={v}")),
    ];
    (
        select(&["UDP", "TCP", "TLS", "WS", "WSS", "SCTP", "udp"][..]),
        0..3usize,
        host(),
        prop::option::weighted(0.5, any::<u16>()),
        token(16),
        vec(param, 0..3),
        0..PSEPS.len(),
        any::<bool>(),
    )
        .prop_map(|(transport, spacing, host, port, suffix, mut params, psep, branch_first)| {
            let proto = match spacing {
                0 => format!("SIP/2.0/{transport}"),
                1 => format!("SIP / 2.0 / {transport}"),
                _ => format!("sip/2.0/{transport}"),
            };
            let branch = format!("z9hG4bK{suffix}");
            let bp = format!("branch={branch}");
            if branch_first {
                params.insert(0, bp);
            } else {
                params.push(bp);
            }
            let mut text = format!("{proto} {host}");
            if let Some(p) = port {
                text.push_str(&format!(":{p}"));
            }
            for p in params {
                text.push_str(PSEPS[psep]);
                text.push_str(&p);
            }
            ViaGen { text, branch }
        })
        .boxed()
}

/// Quoted-string content: text with `\"` and `\\` escapes (kept escaped, as written).
fn display_name() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            10 => re("[A-Za-z0-9 .,:;<>@'()é]"),
            1 => Just("\\\"".to_owned()),
            1 => Just("\\\\".to_owned()),
        ],
        0..14,
    )
    .prop_map(|parts| parts.concat())
}

#[derive(Clone, Debug)]
struct NameAddrGen {
    text: String,
    /// The display name as written between the quotes.
    display: Option<String>,
    uri: String,
    tag: Option<String>,
}

fn name_addr(tag_probability: f64) -> BoxedStrategy<NameAddrGen> {
    (
        prop::option::weighted(0.5, display_name()),
        0..3usize,
        sip_uri(true),
        sip_uri(false),
        prop::option::weighted(tag_probability, token(12)),
        0..PSEPS.len(),
        any::<bool>(),
    )
        .prop_map(|(display, form, uri_with_params, bare_uri, tag, psep, space)| {
            let (mut text, display, uri) = if form == 0 {
                // addr-spec: no brackets, so no URI parameters.
                (bare_uri.clone(), None, bare_uri)
            } else {
                let text = match &display {
                    Some(d) => format!("\"{d}\"{}<{uri_with_params}>", if space { " " } else { "" }),
                    None => format!("<{uri_with_params}>"),
                };
                (text, display, uri_with_params)
            };
            if let Some(t) = &tag {
                text.push_str(PSEPS[psep]);
                text.push_str("tag=");
                text.push_str(t);
            }
            NameAddrGen { text, display, uri, tag }
        })
        .boxed()
}

#[derive(Clone, Debug)]
struct ContactGen {
    text: String,
    uri: String,
    expires: Option<u32>,
}

fn contact() -> BoxedStrategy<ContactGen> {
    (prop::option::weighted(0.4, display_name()), sip_uri(true), prop::option::of(any::<u32>()))
        .prop_map(|(display, uri, expires)| {
            let mut text = match display {
                Some(d) => format!("\"{d}\" <{uri}>"),
                None => format!("<{uri}>"),
            };
            if let Some(e) = expires {
                text.push_str(&format!(";expires={e}"));
            }
            ContactGen { text, uri, expires }
        })
        .boxed()
}

/// `word [ "@" word ]`.
fn call_id() -> impl Strategy<Value = String> {
    let word = r#"[A-Za-z0-9.!%*_+`'~()<>:\\"/\[\]?{}-]{1,16}"#;
    (re(word), prop::option::weighted(0.8, prop_oneof![re(word), domain()])).prop_map(|(a, b)| match b {
        Some(b) => format!("{a}@{b}"),
        None => a,
    })
}

fn content_type() -> impl Strategy<Value = String> {
    select(
        &["application/sdp", "text/plain;charset=UTF-8", "application/pidf+xml", "multipart/mixed;boundary=b0undary"][..],
    )
    .prop_map(str::to_owned)
}

/// An extension header name, `X-` in any case plus token characters.
fn x_name() -> impl Strategy<Value = String> {
    (select(&["X-", "x-"][..]), token(10)).prop_map(|(x, t)| format!("{x}{t}"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        3 => vec(prop_oneof![4 => any::<u8>(), 1 => Just(0u8), 1 => Just(b'\n'), 1 => Just(b'\r')], 1..96),
    ]
}

/// How one header line is written.
#[derive(Clone, Debug, Default)]
struct Style {
    compact: bool,
    /// Case of each letter (bit i for letter i); `None` keeps the canonical spelling.
    case: Option<u64>,
    sep: usize,
    /// Where to fold the value: each picks one whitespace position.
    folds: Vec<Index>,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::bool::weighted(0.3),
        prop::option::weighted(0.4, any::<u64>()),
        0..SEPS.len(),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<Index>(), 1..3)],
    )
        .prop_map(|(compact, case, sep, folds)| Style { compact, case, sep, folds })
}

fn recase(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| if bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

/// The header name as the generator writes it: long or compact form, canonical or random case.
fn written_name(canon: HeaderName, st: &Style) -> String {
    use HeaderName as H;
    let (long, compact) = match canon {
        H::Via => ("Via", Some("v")),
        H::From => ("From", Some("f")),
        H::To => ("To", Some("t")),
        H::CallId => ("Call-ID", Some("i")),
        H::Contact => ("Contact", Some("m")),
        H::ContentLength => ("Content-Length", Some("l")),
        H::ContentType => ("Content-Type", Some("c")),
        H::CSeq => ("CSeq", None),
        H::MaxForwards => ("Max-Forwards", None),
        other => panic!("no spelling for {other:?}"),
    };
    let base = if st.compact { compact.unwrap_or(long) } else { long };
    match st.case {
        Some(bits) => recase(base, bits),
        None => base.to_owned(),
    }
}

/// Folds a value: inserts CRLF in front of whitespace, so the continuation line starts with it.
/// Whitespace right after a backslash (a quoted-pair) or after a fold is left alone.
fn fold(value: &str, folds: &[Index], eol: &str) -> String {
    let mut v = value.to_owned();
    for f in folds {
        let b = v.as_bytes();
        let spots: Vec<usize> =
            (1..b.len()).filter(|&i| matches!(b[i], b' ' | b'\t') && !matches!(b[i - 1], b'\\' | b'\n')).collect();
        if spots.is_empty() {
            break;
        }
        v.insert_str(spots[f.index(spots.len())], eol);
    }
    v
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum StartGen {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

impl StartGen {
    fn line(&self) -> String {
        match self {
            StartGen::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
            StartGen::Response { code, reason } => format!("SIP/2.0 {code} {reason}"),
        }
    }
}

#[derive(Clone, Debug)]
struct FieldGen {
    name: String,
    canon: HeaderName,
    /// As written, folds included.
    value: String,
    sep: &'static str,
    /// The branches of the Via values in this field.
    branches: Vec<String>,
}

#[derive(Clone, Debug)]
struct Expect {
    cseq: u32,
    cseq_method: String,
    call_id: String,
    max_forwards: Option<u8>,
    from: NameAddrGen,
    to: NameAddrGen,
    contact: Option<ContactGen>,
    content_type: Option<String>,
}

#[derive(Clone, Debug)]
struct Gen {
    /// Line break: CRLF, or bare LF (tolerated by the parser).
    eol: &'static str,
    start: StartGen,
    fields: Vec<FieldGen>,
    body: Vec<u8>,
    expect: Expect,
}

impl Gen {
    fn wire(&self) -> Vec<u8> {
        let mut out = self.start.line().into_bytes();
        out.extend_from_slice(self.eol.as_bytes());
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.extend_from_slice(f.sep.as_bytes());
            out.extend_from_slice(f.value.as_bytes());
            out.extend_from_slice(self.eol.as_bytes());
        }
        out.extend_from_slice(self.eol.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
    fn branches(&self) -> Vec<String> {
        self.fields.iter().flat_map(|f| f.branches.iter().cloned()).collect()
    }
    fn pairs(&self) -> Vec<(String, String)> {
        self.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect()
    }
}

fn gen_msg() -> BoxedStrategy<Gen> {
    let start = prop_oneof![
        (method(), sip_uri(true)).prop_map(|(method, uri)| StartGen::Request { method, uri }),
        (100u16..=699, reason()).prop_map(|(code, reason)| StartGen::Response { code, reason }),
    ];
    let ids = (
        vec((via(), prop::bool::weighted(0.3), 0..JOINERS.len()), 1..4),
        name_addr(0.9),
        name_addr(0.4),
        call_id(),
        any::<u32>(),
        method(),
        0..4usize,
        any::<u8>(),
        prop::bool::weighted(0.3),
    );
    let extra = (
        prop::option::weighted(0.5, contact()),
        prop::option::weighted(0.4, content_type()),
        vec((x_name(), text()), 0..6),
        body(),
    );
    let shape = (
        vec(style(), 24),
        prop::option::weighted(0.7, vec(any::<u16>(), 24)),
        prop::bool::weighted(0.1).prop_map(|lf| if lf { "\n" } else { "\r\n" }),
    );
    (start, ids, extra, shape)
        .prop_map(
            |(
                start,
                (vias, from, to, call_id, seq, cseq_method, cseq_space, mf, response_mf),
                (contact, content_type, xs, body),
                (styles, order, eol),
            )| {
                let mut styles = styles.into_iter();
                let mut fields = Vec::new();
                let mut add = |canon: HeaderName, name: Option<String>, value: String, branches: Vec<String>| {
                    let st = styles.next().unwrap_or_default();
                    let name = name.unwrap_or_else(|| written_name(canon, &st));
                    fields.push(FieldGen {
                        name,
                        canon,
                        value: fold(&value, &st.folds, eol),
                        sep: SEPS[st.sep],
                        branches,
                    });
                };

                // Via values, some written several to a field.
                let mut groups: Vec<(String, Vec<String>)> = Vec::new();
                for (v, join, joiner) in vias {
                    match groups.last_mut() {
                        Some((text, branches)) if join => {
                            text.push_str(JOINERS[joiner]);
                            text.push_str(&v.text);
                            branches.push(v.branch);
                        }
                        _ => groups.push((v.text, vec![v.branch])),
                    }
                }
                for (text, branches) in groups {
                    add(HeaderName::Via, None, text, branches);
                }
                add(HeaderName::From, None, from.text.clone(), vec![]);
                add(HeaderName::To, None, to.text.clone(), vec![]);
                add(HeaderName::CallId, None, call_id.clone(), vec![]);
                let cseq_method = match &start {
                    StartGen::Request { method, .. } => method.clone(),
                    StartGen::Response { .. } => cseq_method,
                };
                add(
                    HeaderName::CSeq,
                    None,
                    format!("{seq}{}{cseq_method}", [" ", "  ", "\t", " \t "][cseq_space]),
                    vec![],
                );
                let max_forwards = match start {
                    StartGen::Request { .. } => Some(mf),
                    StartGen::Response { .. } => response_mf.then_some(mf),
                };
                if let Some(mf) = max_forwards {
                    add(HeaderName::MaxForwards, None, mf.to_string(), vec![]);
                }
                if let Some(c) = &contact {
                    add(HeaderName::Contact, None, c.text.clone(), vec![]);
                }
                if let Some(ct) = &content_type {
                    add(HeaderName::ContentType, None, ct.clone(), vec![]);
                }
                add(HeaderName::ContentLength, None, body.len().to_string(), vec![]);
                for (name, value) in xs {
                    add(HeaderName::Other, Some(name), value, vec![]);
                }

                if let Some(keys) = order {
                    let mut keyed: Vec<_> = fields.into_iter().zip(keys).collect();
                    keyed.sort_by_key(|(_, k)| *k);
                    fields = keyed.into_iter().map(|(f, _)| f).collect();
                }
                let expect = Expect { cseq: seq, cseq_method, call_id, max_forwards, from, to, contact, content_type };
                Gen { eol, start, fields, body, expect }
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn pairs(m: &Message) -> Vec<(String, String)> {
    m.headers().map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
}

fn check_start(m: &Message, start: &StartGen) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.version(), "SIP/2.0");
    match start {
        StartGen::Request { method, uri } => {
            prop_assert!(m.is_request());
            prop_assert_eq!(m.method().map(|x| x.as_str()), Some(method.as_str()));
            prop_assert_eq!(m.request_uri_str(), Some(uri.as_str()));
            prop_assert_eq!(m.status(), None);
        }
        StartGen::Response { code, reason } => {
            prop_assert!(m.is_response());
            prop_assert_eq!(m.status(), Some(*code));
            prop_assert_eq!(m.reason(), Some(reason.as_str()));
            prop_assert_eq!(m.method(), None);
        }
    }
    Ok(())
}

/// Start line, header (name, value) list and body are what was generated.
fn check_shape(m: &Message, g: &Gen) -> Result<(), TestCaseError> {
    check_start(m, &g.start)?;
    prop_assert_eq!(pairs(m), g.pairs());
    let canon: Vec<HeaderName> = m.header_fields().map(|(n, _)| n).collect();
    prop_assert_eq!(canon, g.fields.iter().map(|f| f.canon).collect::<Vec<_>>());
    prop_assert_eq!(m.body().as_ref(), &g.body[..]);
    Ok(())
}

/// Two messages have the same start line, headers (in order) and body.
fn check_same(a: &Message, b: &Message) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.is_request(), b.is_request());
    prop_assert_eq!(a.method(), b.method());
    prop_assert_eq!(a.request_uri_str(), b.request_uri_str());
    prop_assert_eq!(a.version(), b.version());
    prop_assert_eq!(a.status(), b.status());
    prop_assert_eq!(a.reason(), b.reason());
    prop_assert_eq!(pairs(a), pairs(b));
    prop_assert_eq!(
        a.header_fields().map(|(n, _)| n).collect::<Vec<_>>(),
        b.header_fields().map(|(n, _)| n).collect::<Vec<_>>()
    );
    prop_assert_eq!(a.body(), b.body());
    Ok(())
}

fn check_name_addr(na: &NameAddr<'_>, g: &NameAddrGen) -> Result<(), TestCaseError> {
    prop_assert_eq!(na.uri_str, g.uri.as_str());
    prop_assert_eq!(na.uri.to_string(), g.uri.clone());
    // A fold inside the quotes stays in the display name as written; take it out to compare.
    let unfold = |s: &str| s.replace(['\r', '\n'], "");
    prop_assert_eq!(na.display_name.map(unfold), g.display.clone());
    prop_assert_eq!(na.tag(), g.tag.as_deref());
    if let Some(d) = &g.display {
        let want = d.replace("\\\\", "\u{0}").replace("\\\"", "\"").replace('\u{0}', "\\");
        prop_assert_eq!(na.display_name_text().map(|t| unfold(&t)), Some(want));
    }
    Ok(())
}

/// The typed accessors decode what was generated.
fn check_typed(m: &Message, g: &Gen) -> Result<(), TestCaseError> {
    let e = &g.expect;
    let cseq = m.cseq().map_err(|err| TestCaseError::fail(format!("CSeq: {err}")))?;
    prop_assert_eq!(cseq.seq, e.cseq);
    prop_assert_eq!(cseq.method.as_str(), e.cseq_method.as_str());
    prop_assert_eq!(m.call_id(), Ok(e.call_id.as_str()));
    prop_assert_eq!(m.max_forwards(), Ok(e.max_forwards));
    let from = m.from().map_err(|err| TestCaseError::fail(format!("From: {err}")))?;
    check_name_addr(&from, &e.from)?;
    let to = m.to().map_err(|err| TestCaseError::fail(format!("To: {err}")))?;
    check_name_addr(&to, &e.to)?;

    let vias: Vec<Option<String>> = m
        .vias()
        .map(|v| v.map(|v| v.branch().map(str::to_owned)))
        .collect::<Result<_, _>>()
        .map_err(|err| TestCaseError::fail(format!("Via: {err}")))?;
    let branches = g.branches();
    prop_assert_eq!(vias, branches.iter().cloned().map(Some).collect::<Vec<_>>());
    let top = m.top_via().map_err(|err| TestCaseError::fail(format!("top Via: {err}")))?;
    prop_assert_eq!(top.branch(), Some(branches[0].as_str()));
    prop_assert!(top.has_rfc3261_branch());

    prop_assert_eq!(m.content_length(), Ok(Some(g.body.len() as u32)));
    prop_assert_eq!(m.body().len(), g.body.len());
    match &e.content_type {
        Some(ct) => {
            let t = m.content_type().map_err(|err| TestCaseError::fail(format!("Content-Type: {err}")))?;
            let t = t.ok_or_else(|| TestCaseError::fail("Content-Type missing"))?;
            prop_assert_eq!(format!("{}/{}{}", t.kind, t.subtype, t.params.as_str()), ct.clone());
        }
        None => prop_assert_eq!(m.content_type(), Ok(None)),
    }
    match &e.contact {
        Some(c) => match m.contacts() {
            Ok(Some(Contacts::List(list))) => {
                prop_assert_eq!(list.len(), 1);
                prop_assert_eq!(list[0].uri_str, c.uri.as_str());
                prop_assert_eq!(list[0].expires(), c.expires);
            }
            other => prop_assert!(false, "Contact: {:?}", other),
        },
        None => prop_assert_eq!(m.contacts(), Ok(None)),
    }
    if let StartGen::Request { uri, .. } = &g.start {
        match m.request_uri() {
            Some(Ok(u @ Uri::Sip(_))) => prop_assert_eq!(u.to_string(), uri.clone()),
            other => prop_assert!(false, "Request-URI: {:?}", other),
        }
    }
    Ok(())
}

/// The message built through the builder API from the generated parts.
fn build(g: &Gen) -> Message {
    let mut m = match &g.start {
        StartGen::Request { method, uri } => Message::new_request(method, uri),
        StartGen::Response { code, reason } => Message::new_response(*code, reason),
    };
    m.set_body(Bytes::from(g.body.clone()), None);
    for f in &g.fields {
        m.push_header_named(&f.name, &f.value);
    }
    m
}

fn parse(b: Bytes, framing: Framing) -> Result<Message, TestCaseError> {
    Message::parse(b.clone(), framing)
        .map_err(|e| TestCaseError::fail(format!("{framing:?} parse failed: {e}\n{:?}", String::from_utf8_lossy(&b))))
}

fn config() -> ProptestConfig {
    // No regression files: this file is the only one the tests own.
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// (a) parses, (b) untouched serialization is byte-exact, (c) parse(serialize(m)) == m, also
    /// after a forced re-serialization and for the same message built through the API, (d) the
    /// typed values decode to what was generated.
    #[test]
    fn generated_messages_round_trip(g in gen_msg()) {
        let wire = Bytes::from(g.wire());
        for framing in [Framing::Datagram, Framing::Stream] {
            let m = parse(wire.clone(), framing)?;
            prop_assert!(m.is_untouched());
            prop_assert_eq!(m.to_bytes(), wire.clone());
            check_shape(&m, &g)?;
            let again = parse(m.to_bytes(), framing)?;
            check_same(&m, &again)?;
        }
        let m = parse(wire.clone(), Framing::Datagram)?;
        check_typed(&m, &g)?;

        // Forced re-serialization: untouched lines copied, new start line and field written.
        let mut touched = m.clone();
        if let StartGen::Request { uri, .. } = &g.start {
            touched.set_request_uri(uri);
        }
        touched.push_header_named("X-Touched", "yes");
        prop_assert!(!touched.is_untouched());
        let out = touched.to_bytes();
        let reparsed = parse(out.clone(), Framing::Stream)?;
        check_start(&reparsed, &g.start)?;
        let mut expect = g.pairs();
        expect.push(("X-Touched".to_owned(), "yes".to_owned()));
        prop_assert_eq!(pairs(&reparsed), expect);
        prop_assert_eq!(reparsed.body(), m.body());
        // Byte for byte: untouched lines verbatim, Content-Length rewritten as `name: N` CRLF,
        // the start line rebuilt with single spaces and CRLF.
        let cl_verbatim = g.fields.iter().all(|f| f.canon != HeaderName::ContentLength || f.sep == ": ");
        if g.eol == "\r\n" && cl_verbatim {
            let mut want = wire.to_vec();
            let at = want.len() - g.body.len() - 2;
            want.splice(at..at, b"X-Touched: yes\r\n".iter().copied());
            prop_assert_eq!(out, Bytes::from(want));
        }

        // Extension headers by name, in any case.
        for f in g.fields.iter().filter(|f| f.canon == HeaderName::Other) {
            let first = g.fields.iter().find(|x| x.canon == HeaderName::Other && x.name.eq_ignore_ascii_case(&f.name));
            prop_assert_eq!(m.header_by_name(&f.name.to_ascii_uppercase()), first.map(|x| x.value.as_str()));
        }

        // A response built from the request carries its Via, From, To, Call-ID and CSeq.
        if m.is_request() {
            let r = m.response_to(180, "Ringing", Some("resp-tag"));
            let r = parse(r.to_bytes(), Framing::Stream)?;
            prop_assert_eq!(r.status(), Some(180));
            let copied = |m: &Message| -> Vec<(HeaderName, String)> {
                use HeaderName as H;
                m.header_fields()
                    .filter(|(n, _)| matches!(n, H::Via | H::From | H::CallId | H::CSeq))
                    .map(|(n, v)| (n, v.to_owned()))
                    .collect()
            };
            prop_assert_eq!(copied(&r), copied(&m));
            let to = r.to().map_err(|err| TestCaseError::fail(format!("response To: {err}")))?;
            prop_assert_eq!(to.tag(), Some(g.expect.to.tag.as_deref().unwrap_or("resp-tag")));
            prop_assert_eq!(to.uri_str, g.expect.to.uri.as_str());
            prop_assert_eq!(r.content_length(), Ok(Some(0)));
        }

        // The same message built through the API.
        let built = build(&g);
        prop_assert_eq!(pairs(&built), g.pairs());
        let reparsed = parse(built.to_bytes(), Framing::Stream)?;
        check_shape(&reparsed, &g)?;
        check_typed(&reparsed, &g)?;

        // A valid message is never refused as malformed.
        match sip::inspect(wire, Framing::Datagram, &Policy::default()) {
            Verdict::Accept(a) => check_same(&a, &m)?,
            Verdict::Reject { rejection, .. } => {
                prop_assert!(m.is_request());
                prop_assert_ne!(rejection.status, 400, "{:?}", rejection);
            }
            Verdict::Drop(e) => prop_assert!(false, "dropped: {}", e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edits against a model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    PushNamed(String, String),
    Push(HeaderName, String),
    PrependVia(String),
    Remove(HeaderName),
    /// Removes an extension header by a name picked from the current ones, case changed.
    RemoveNamed(Index, u64),
    Set(HeaderName, String),
    RemoveFirstVia,
    DecrementMaxForwards,
    SetRequestUri(String),
    SetBody(Vec<u8>, Option<String>),
}

const EDIT_NAMES: &[HeaderName] = &[
    HeaderName::Via,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::Contact,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::Supported,
    HeaderName::Subject,
    HeaderName::CallId,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CSeq,
];

/// Known names pushed by name as written: (name, canonical).
const NAMED_KNOWN: &[(&str, HeaderName)] = &[
    ("m", HeaderName::Contact),
    ("s", HeaderName::Subject),
    ("ROUTE", HeaderName::Route),
    ("supported", HeaderName::Supported),
    ("k", HeaderName::Supported),
];

fn value_for(name: HeaderName) -> BoxedStrategy<String> {
    match name {
        // Via values stay list-splittable by commas alone, as the model splits them.
        HeaderName::Via => via().prop_map(|v| v.text).boxed(),
        HeaderName::MaxForwards => prop_oneof![
            4 => (0u32..300).prop_map(|n| n.to_string()),
            1 => Just("abc".to_owned()),
            1 => Just(String::new()),
        ]
        .boxed(),
        _ => text().boxed(),
    }
}

fn op() -> BoxedStrategy<Op> {
    let edit_name = select(EDIT_NAMES);
    prop_oneof![
        1 => (x_name(), text()).prop_map(|(n, v)| Op::PushNamed(n, v)),
        1 => (select(NAMED_KNOWN), text()).prop_map(|((n, _), v)| Op::PushNamed(n.to_owned(), v)),
        1 => edit_name.clone().prop_flat_map(|n| value_for(n).prop_map(move |v| Op::Push(n, v))),
        1 => via().prop_map(|v| Op::PrependVia(v.text)),
        1 => prop_oneof![4 => edit_name.clone(), 1 => Just(HeaderName::Other)].prop_map(Op::Remove),
        1 => (any::<Index>(), any::<u64>()).prop_map(|(i, c)| Op::RemoveNamed(i, c)),
        1 => edit_name.prop_flat_map(|n| value_for(n).prop_map(move |v| Op::Set(n, v))),
        2 => Just(Op::RemoveFirstVia),
        2 => Just(Op::DecrementMaxForwards),
        1 => sip_uri(true).prop_map(Op::SetRequestUri),
        1 => (body(), prop::option::of(content_type())).prop_map(|(b, ct)| Op::SetBody(b, ct)),
    ]
    .boxed()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MField {
    name: String,
    canon: HeaderName,
    value: String,
}

/// What the header list should be: a plain vector, edited by plain rules.
#[derive(Clone, Debug)]
struct Model {
    start: StartGen,
    fields: Vec<MField>,
    body: Vec<u8>,
    edited: bool,
}

fn canon_of(name: &str) -> HeaderName {
    if let Some(&(_, c)) = NAMED_KNOWN.iter().find(|(n, _)| *n == name) {
        return c;
    }
    assert!(name.to_ascii_lowercase().starts_with("x-"), "unexpected name {name}");
    HeaderName::Other
}

fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

impl Model {
    fn new(g: &Gen) -> Model {
        let fields =
            g.fields.iter().map(|f| MField { name: f.name.clone(), canon: f.canon, value: f.value.clone() }).collect();
        Model { start: g.start.clone(), fields, body: g.body.clone(), edited: false }
    }

    fn set(&mut self, canon: HeaderName, value: &str) {
        let at = self.fields.iter().position(|f| f.canon == canon);
        self.fields.retain(|f| f.canon != canon);
        let f = MField { name: canon.as_str().to_owned(), canon, value: value.to_owned() };
        match at {
            Some(i) => self.fields.insert(i, f),
            None => self.fields.push(f),
        }
        self.edited = true;
    }

    fn remove(&mut self, keep: impl Fn(&MField) -> bool) -> usize {
        let before = self.fields.len();
        self.fields.retain(keep);
        let n = before - self.fields.len();
        self.edited |= n > 0;
        n
    }

    /// What the serializer writes: the first Content-Length carries the body length, later ones
    /// are dropped, and one is appended when there is none.
    fn serialized(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut wrote = false;
        for f in &self.fields {
            if f.canon == HeaderName::ContentLength {
                if !wrote {
                    out.push((f.name.clone(), self.body.len().to_string()));
                }
                wrote = true;
            } else {
                out.push((f.name.clone(), f.value.clone()));
            }
        }
        if !wrote {
            out.push(("Content-Length".to_owned(), self.body.len().to_string()));
        }
        out
    }
}

/// Applies one edit to the message and the model, checking the return values agree.
fn apply(m: &mut Message, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::PushNamed(name, value) => {
            m.push_header_named(name, value);
            model.fields.push(MField { name: name.clone(), canon: canon_of(name), value: value.clone() });
            model.edited = true;
        }
        Op::Push(name, value) => {
            m.push_header(*name, value);
            model.fields.push(MField { name: name.as_str().to_owned(), canon: *name, value: value.clone() });
            model.edited = true;
        }
        Op::PrependVia(value) => {
            m.prepend_header(HeaderName::Via, value);
            let at = model.fields.iter().position(|f| f.canon == HeaderName::Via).unwrap_or(0);
            model.fields.insert(at, MField { name: "Via".to_owned(), canon: HeaderName::Via, value: value.clone() });
            model.edited = true;
        }
        Op::Remove(name) => {
            let n = m.remove_headers(*name);
            let want = model.remove(|f| f.canon != *name);
            prop_assert_eq!(n, want);
        }
        Op::RemoveNamed(i, case) => {
            let names: Vec<&MField> = model.fields.iter().filter(|f| f.canon == HeaderName::Other).collect();
            let name =
                if names.is_empty() { "X-Absent".to_owned() } else { recase(&names[i.index(names.len())].name, *case) };
            let n = m.remove_header_named(&name);
            let want = model.remove(|f| !(f.canon == HeaderName::Other && f.name.eq_ignore_ascii_case(&name)));
            prop_assert_eq!(n, want);
        }
        Op::Set(name, value) => {
            m.set_header(*name, value);
            model.set(*name, value);
        }
        Op::RemoveFirstVia => {
            let found = m.remove_first_value(HeaderName::Via);
            let at = model.fields.iter().position(|f| f.canon == HeaderName::Via);
            prop_assert_eq!(found, at.is_some());
            if let Some(i) = at {
                let rest: Vec<&str> = model.fields[i].value.split(',').skip(1).map(trim_lws).collect();
                if rest.is_empty() {
                    model.fields.remove(i);
                } else {
                    model.fields[i].value = rest.join(", ");
                }
                model.edited = true;
            }
        }
        Op::DecrementMaxForwards => {
            let got = m.decrement_max_forwards();
            let current = model.fields.iter().find(|f| f.canon == HeaderName::MaxForwards).map(|f| {
                let v = trim_lws(&f.value);
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                v.parse::<u128>().ok().filter(|&n| n <= 255).map(|n| n as u8)
            });
            let want = match current {
                None => Some(70),
                Some(None) | Some(Some(0)) => None,
                Some(Some(n)) => Some(n - 1),
            };
            prop_assert_eq!(got, want);
            if let Some(n) = want {
                model.set(HeaderName::MaxForwards, &n.to_string());
            }
        }
        Op::SetRequestUri(uri) => {
            m.set_request_uri(uri);
            if let StartGen::Request { uri: u, .. } = &mut model.start {
                *u = uri.clone();
                model.edited = true;
            }
        }
        Op::SetBody(body, ct) => {
            m.set_body(Bytes::from(body.clone()), ct.as_deref());
            model.body = body.clone();
            match ct {
                Some(ct) => model.set(HeaderName::ContentType, ct),
                None => {
                    model.remove(|f| f.canon != HeaderName::ContentType);
                }
            }
            model.edited = true;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Random edit sequences: the edited message, and its serialization re-parsed, hold exactly
    /// the header list the model predicts, with Content-Length equal to the body length.
    #[test]
    fn edits_serialize_as_modelled(g in gen_msg(), ops in vec(op(), 0..10)) {
        let wire = Bytes::from(g.wire());
        let mut m = parse(wire.clone(), Framing::Datagram)?;
        let mut model = Model::new(&g);
        for op in &ops {
            apply(&mut m, &mut model, op)?;
            let want: Vec<(String, String)> = model.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
            prop_assert_eq!(pairs(&m), want, "after {:?}", op);
        }
        prop_assert_eq!(m.is_untouched(), !model.edited);
        prop_assert_eq!(m.body().as_ref(), &model.body[..]);

        let out = m.to_bytes();
        if !model.edited {
            prop_assert_eq!(out.clone(), wire);
        }
        for framing in [Framing::Datagram, Framing::Stream] {
            let r = parse(out.clone(), framing)?;
            check_start(&r, &model.start)?;
            prop_assert_eq!(pairs(&r), model.serialized());
            let canon: Vec<HeaderName> = r.header_fields().map(|(n, _)| n).collect();
            let mut want_canon: Vec<HeaderName> = Vec::new();
            let mut wrote = false;
            for f in &model.fields {
                if f.canon == HeaderName::ContentLength {
                    if wrote { continue; }
                    wrote = true;
                }
                want_canon.push(f.canon);
            }
            if !wrote {
                want_canon.push(HeaderName::ContentLength);
            }
            prop_assert_eq!(canon, want_canon);
            prop_assert_eq!(r.content_length(), Ok(Some(model.body.len() as u32)));
            prop_assert_eq!(r.body().as_ref(), &model.body[..]);
            prop_assert_eq!(r.to_bytes(), out.clone());
        }
        prop_assert_eq!(sip::frame(&out, 1 << 16), Frame::Message(out.len()));
    }
}

// ---------------------------------------------------------------------------------------------
// Stream framing
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Messages and `\r\n\r\n` keep-alives concatenated into one stream and fed in random
    /// segments are cut back into exactly the original messages.
    #[test]
    fn stream_is_framed_back_into_messages(
        msgs in vec(gen_msg(), 1..5),
        keepalives in vec(prop_oneof![3 => Just(0usize), 1 => 1..3usize], 6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        let mut keepalive_bytes = 0;
        for (i, g) in msgs.iter().enumerate() {
            for _ in 0..keepalives[i] {
                stream.extend_from_slice(b"\r\n\r\n");
                keepalive_bytes += 4;
            }
            stream.extend_from_slice(&g.wire());
        }
        for _ in 0..keepalives[5] {
            stream.extend_from_slice(b"\r\n\r\n");
            keepalive_bytes += 4;
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.extend([0, stream.len()]);
        points.sort_unstable();
        points.dedup();

        let mut buf = BytesMut::new();
        let mut got: Vec<Bytes> = Vec::new();
        let mut skipped = 0;
        for w in points.windows(2) {
            buf.extend_from_slice(&stream[w[0]..w[1]]);
            loop {
                match sip::frame(&buf, 1 << 16) {
                    Frame::Message(n) => {
                        prop_assert!(n > 0 && n <= buf.len());
                        got.push(buf.split_to(n).freeze());
                    }
                    Frame::KeepAlive(n) => {
                        prop_assert!(n > 0 && n <= buf.len());
                        prop_assert!(buf[..n].iter().all(|&b| b == b'\r' || b == b'\n'));
                        skipped += n;
                        let _ = buf.split_to(n);
                    }
                    Frame::Incomplete => break,
                    Frame::Invalid(e) => {
                        prop_assert!(false, "invalid after {} messages: {}", got.len(), e);
                    }
                }
            }
        }
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(skipped, keepalive_bytes);
        prop_assert_eq!(got.len(), msgs.len());
        for (b, g) in got.iter().zip(&msgs) {
            prop_assert_eq!(b.as_ref(), &g.wire()[..]);
            let m = parse(b.clone(), Framing::Stream)?;
            prop_assert_eq!(&m.to_bytes(), b);
            check_shape(&m, g)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

fn poke_uri(u: &Uri<'_>) {
    let _ = (u.to_string(), u.scheme(), u.user().map(sip::uri::unescape));
    if let Some(s) = u.as_sip() {
        let _ = (s.transport(), s.has_lr(), s.maddr(), s.user_param(), s.host.to_string(), s.host.ip(), s.port);
        let _ = s.params.iter().count();
        let _ = s.headers.map(sip::uri::unescape);
    }
    if let Some(t) = u.as_tel() {
        let _ = (t.number, t.global, t.params.iter().count());
    }
}

fn poke_name_addr(na: &NameAddr<'_>) {
    let _ = (na.tag(), na.display_name_text(), na.user(), na.expires(), na.q(), na.params.iter().count());
    poke_uri(&na.uri);
}

/// Calls every read accessor; none may panic, whatever they return.
fn exercise(m: &Message) {
    use HeaderName as H;
    let _ = m.to_bytes();
    let _ = m.to_string();
    let _ = (m.is_request(), m.is_response(), m.method().map(|x| x.to_string()), m.request_uri_str());
    let _ = (m.version(), m.status(), m.reason(), m.fault(), m.is_untouched(), m.body().len());
    if let Some(Ok(u)) = m.request_uri() {
        poke_uri(&u);
    }
    let _ = m.headers().map(|(n, v)| n.len() + v.len()).sum::<usize>();
    let _ = m.header_fields().count();
    for &(name, long, _) in HeaderName::ALL {
        let _ = (m.header(name), m.count(name), m.header_by_name(long), m.header_values(name).count());
    }
    let _ = m.header_by_name("X-Foo");
    for v in m.vias().flatten() {
        let _ = (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl(), v.has_rfc3261_branch());
        let _ = (v.host.to_string(), v.host.ip(), v.port, v.params.iter().count());
    }
    let _ = m.top_via();
    for na in [m.from(), m.to()].into_iter().flatten() {
        poke_name_addr(&na);
    }
    let _ = (m.call_id(), m.cseq().map(|c| c.method.to_string()), m.max_forwards());
    if let Ok(Some(Contacts::List(list))) = m.contacts() {
        list.iter().for_each(poke_name_addr);
    }
    for name in [
        H::Route,
        H::RecordRoute,
        H::Path,
        H::PAssertedIdentity,
        H::PPreferredIdentity,
        H::Diversion,
        H::RemotePartyId,
        H::ReferTo,
        H::ReferredBy,
    ] {
        if let Ok(list) = m.name_addrs(name) {
            list.iter().for_each(poke_name_addr);
        }
    }
    let _ = m.content_length();
    if let Ok(Some(ct)) = m.content_type() {
        let _ = (ct.is("application", "sdp"), ct.matches("text", "plain"), ct.params.iter().count());
    }
    let _ = m.expires();
    for name in [H::Supported, H::Require, H::ProxyRequire, H::Unsupported, H::Allow, H::AcceptEncoding] {
        let _ = m.tokens(name);
    }
    let _ = m.privacy();
    for name in [H::Authorization, H::ProxyAuthorization, H::WwwAuthenticate, H::ProxyAuthenticate] {
        for a in m.auth(name).flatten() {
            for p in ["realm", "nonce", "username", "qop", "response", "opaque"] {
                let _ = a.param(p);
            }
        }
    }
    for r in m.reasons().flatten() {
        let _ = (r.cause(), r.text());
    }
    for i in m.identities().flatten() {
        let _ = (i.info(), i.alg(), i.ppt());
    }
    let _ = sip::validate::check_response(m);
    let _ = sip::validate::check_request(m, &Policy::default());
    let _ = m.response_to(486, "Busy Here", Some("t1")).to_bytes();
}

/// Edits a message that parsed cleanly; the result must parse cleanly again.
fn edit_and_reparse(m: &Message) -> Result<(), TestCaseError> {
    let again = parse(m.to_bytes(), Framing::Datagram)?;
    check_same(m, &again)?;
    let mut e = m.clone();
    let _ = e.decrement_max_forwards();
    let _ = e.remove_first_value(HeaderName::Via);
    e.prepend_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKedit");
    e.push_header_named("X-Edit", "1");
    e.set_request_uri("sip:edit@example.com");
    let out = e.to_bytes();
    let r = parse(out.clone(), Framing::Stream)?;
    prop_assert_eq!(r.body(), e.body());
    prop_assert_eq!(r.content_length(), Ok(Some(e.body().len() as u32)));
    prop_assert_eq!(pairs(&r).len(), e.headers().count() + usize::from(e.count(HeaderName::ContentLength) == 0));
    if m.is_request() {
        let resp = m.response_to(200, "OK", Some("t2")).to_bytes();
        let r = parse(resp, Framing::Stream)?;
        prop_assert_eq!(r.status(), Some(200));
    }
    e.set_body(Bytes::from_static(b"v=0\r\n"), Some("application/sdp"));
    parse(e.to_bytes(), Framing::Datagram)?;
    Ok(())
}

/// Everything the network can reach must survive these bytes.
fn hammer(bytes: &[u8]) -> Result<(), TestCaseError> {
    let b = Bytes::copy_from_slice(bytes);
    let policy = Policy::default();
    for framing in [Framing::Datagram, Framing::Stream] {
        match Message::parse(b.clone(), framing) {
            Ok(m) => {
                for (name, value) in m.headers() {
                    prop_assert!(
                        !name.is_empty()
                            && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
                    );
                    prop_assert_eq!(value, trim_lws(value));
                }
                exercise(&m);
                edit_and_reparse(&m)?;
            }
            Err(e) => {
                let _ = e.to_string();
                if let Some(p) = &e.partial {
                    exercise(p);
                }
            }
        }
        match sip::inspect(b.clone(), framing, &policy) {
            Verdict::Accept(m) => exercise(&m),
            Verdict::Reject { rejection, request } => {
                exercise(&request);
                let r = rejection.response(&request, Some("t3"));
                exercise(&r);
                let _ = Message::parse(r.to_bytes(), Framing::Stream);
            }
            Verdict::Drop(_) => {}
        }
    }
    for max_head in [0, 8, 1 << 16] {
        match sip::frame(bytes, max_head) {
            Frame::Message(n) => {
                prop_assert!(n > 0 && n <= bytes.len());
                if let Ok(m) = Message::parse(b.slice(..n), Framing::Stream) {
                    // The framer and the parser agree on where the message ends.
                    prop_assert_eq!(m.to_bytes().len(), n);
                    exercise(&m);
                }
            }
            Frame::KeepAlive(n) => prop_assert!(n > 0 && n <= bytes.len()),
            Frame::Incomplete | Frame::Invalid(_) => {}
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    InsertSnippet(Index, usize),
    Delete(Index, usize),
    Truncate(Index),
    Duplicate(Index, Index),
}

const SNIPPETS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"%",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"\r\n ",
    b"@",
    b"=",
    "é".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\r\nContent-Length: 99999999999",
    b"\r\nl: 5",
    b"\r\nVia: SIP/2.0/UDP [::1",
    b"\r\n: x",
    b"SIP/2.0 ",
    b"0",
    b"4294967296",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 0..SNIPPETS.len()).prop_map(|(i, s)| Mutation::InsertSnippet(i, s)),
        (any::<Index>(), 1..8usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match m {
            Mutation::Flip(i, x) if !v.is_empty() => {
                let i = i.index(v.len());
                v[i] ^= x;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, b) => v.insert(at(i, v.len()), *b),
            Mutation::InsertSnippet(i, s) => {
                let i = at(i, v.len());
                v.splice(i..i, SNIPPETS[*s].iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(i, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Mutation::Truncate(i) => v.truncate(at(i, v.len())),
            Mutation::Duplicate(a, b) => {
                let (a, b) = (at(a, v.len()), at(b, v.len()));
                let (a, b) = (a.min(b), a.max(b).min(a.min(b) + 64));
                let chunk = v[a..b].to_vec();
                v.splice(b..b, chunk);
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        hammer(&bytes)?;
    }

    #[test]
    fn arbitrary_text_messages_never_panic(
        start in prop_oneof![Just("INVITE sip:a@b SIP/2.0\r\n"), Just("SIP/2.0 200 OK\r\n"), Just("")],
        lines in vec(re("[ -~\t:;,<>\"\\\\é]{0,40}(\r\n|\n|\r\n )"), 0..10),
        tail in vec(any::<u8>(), 0..32),
    ) {
        let mut v = start.as_bytes().to_vec();
        for l in lines {
            v.extend_from_slice(l.as_bytes());
        }
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(&tail);
        hammer(&v)?;
    }

    #[test]
    fn mutated_messages_never_panic(g in gen_msg(), ms in vec(mutation(), 1..6)) {
        hammer(&mutate(g.wire(), &ms))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs the properties above found, kept as minimal regression cases.
// ---------------------------------------------------------------------------------------------

/// `frame` looks a header line's name up without checking it is non-empty, and
/// `HeaderName::from_bytes` indexes `name[0]` for every length but 1 (headers.rs:140), so a
/// header line starting with `:` on a stream connection panics the reader.
#[test]
fn frame_empty_header_name_panics() {
    let stream = b"INVITE sip:a@b SIP/2.0\r\n:\r\n\r\n";
    assert!(matches!(sip::frame(stream, 1 << 16), Frame::Invalid(_)));
    let stream = b"INVITE sip:a@b SIP/2.0\r\n : x\r\nl: 0\r\n\r\n";
    assert_eq!(sip::frame(stream, 1 << 16), Frame::Message(stream.len()));
}

/// The same lookup through the public API: an empty header name panics instead of matching
/// nothing.
#[test]
fn empty_header_name_lookups_panic() {
    assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
    let mut m = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n"), Framing::Stream)
        .expect("valid message");
    assert_eq!(m.header_by_name(""), None);
    assert_eq!(m.remove_header_named(""), 0);
}

/// A status line without a reason phrase and without the space before it (`SIP/2.0 100`):
/// `parse_start_line` takes the empty reason from the literal in
/// `rest.split_once(' ').unwrap_or((rest, ""))` (message.rs:808), whose address is unrelated to
/// the line, and its offset `part.as_ptr() - s.as_ptr()` (message.rs:803) underflows: a panic in
/// debug builds, a garbage span (read back as "") in release builds.
#[test]
fn status_line_without_reason_panics() {
    let m = Message::parse(Bytes::from_static(b"SIP/2.0 100\r\nl: 0\r\n\r\n"), Framing::Stream).expect("parses");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(""));
}

/// A continuation line right after the start line (`OPTIONS ... SIP/2.0\r\n A: x`) is accepted as
/// header `A`: `split` trims leading whitespace off the name (message.rs:338,
/// `trim_ws(&line[..colon])`) instead of flagging a fold with no header to continue. The line is
/// kept verbatim, so once an edit inserts a field in front of it (`prepend_header` of a Via, as a
/// proxy does) it serializes as a fold of that field: the re-parsed message has lost header `A`,
/// which is now part of the Via value. Expected: a 400 (or the header kept as its own field).
#[test]
fn folded_first_header_line_merges_into_an_inserted_header() {
    let raw = Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\n A: x\r\nl: 0\r\n\r\n");
    match Message::parse(raw, Framing::Stream) {
        Err(e) => assert_eq!(e.status, 400),
        Ok(m) => {
            let mut e = m.clone();
            e.prepend_header(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK1");
            let r = Message::parse(e.to_bytes(), Framing::Stream).expect("re-parses");
            let names: Vec<&str> = r.headers().map(|(n, _)| n).collect();
            assert_eq!(names, ["Via", "A", "l"]);
        }
    }
}
