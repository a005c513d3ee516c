//! `opentrunk sip parse FILE...`: what the switch makes of a captured message. Each file is
//! read as one datagram and checked with the switch's own policy; a message it would accept is
//! printed as JSON, one it would refuse as `FILE: REJECT <code> <reason>` (or `FILE: DROP
//! <reason>` for a malformed response, which is never answered).

use std::io::Write;

use serde_json::{Map, Value, json};
use sip::headers::{self, HeaderName};
use sip::{Framing, Message, NameAddr, Params, Policy, Uri, Verdict};

/// Runs the command; returns the process exit code (0 when every file was accepted).
pub fn parse_files(files: &[String], out: &mut impl Write) -> std::io::Result<i32> {
    let policy = Policy::default();
    let mut code = 0;
    for file in files {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                writeln!(out, "{file}: ERROR {e}")?;
                code = 2;
                continue;
            }
        };
        match sip::inspect(data.into(), Framing::Datagram, &policy) {
            Verdict::Accept(msg) => {
                writeln!(out, "{}", serde_json::to_string_pretty(&describe(file, &msg)).unwrap_or_default())?;
            }
            Verdict::Reject { rejection, .. } => {
                writeln!(out, "{file}: REJECT {} {}", rejection.status, rejection.reason)?;
                code = code.max(1);
            }
            Verdict::Drop(e) => {
                writeln!(out, "{file}: DROP {e}")?;
                code = code.max(1);
            }
        }
    }
    Ok(code)
}

/// The message as JSON: start line, headers in order with typed values, body length.
pub fn describe(file: &str, msg: &Message) -> Value {
    let mut m = Map::new();
    m.insert("file".into(), json!(file));
    match msg.method() {
        Some(method) => {
            m.insert("kind".into(), json!("request"));
            m.insert("method".into(), json!(method.as_str()));
            let raw = msg.request_uri_str().unwrap_or_default();
            m.insert("request_uri".into(), uri_json(raw, msg.request_uri().and_then(Result::ok).as_ref()));
        }
        None => {
            m.insert("kind".into(), json!("response"));
            m.insert("status".into(), json!(msg.status()));
            m.insert("reason".into(), json!(msg.reason()));
        }
    }
    m.insert("version".into(), json!(msg.version()));
    let headers: Vec<Value> = msg
        .headers()
        .zip(msg.header_fields())
        .map(|((raw_name, value), (name, _))| {
            let mut h = Map::new();
            h.insert("name".into(), json!(if name == HeaderName::Other { raw_name } else { name.as_str() }));
            if raw_name != name.as_str() && name != HeaderName::Other {
                h.insert("as_written".into(), json!(raw_name));
            }
            h.insert("value".into(), json!(value));
            match typed(name, value) {
                Some(Ok(v)) => {
                    h.insert("parsed".into(), v);
                }
                Some(Err(e)) => {
                    h.insert("parse_error".into(), json!(e.to_string()));
                }
                None => {}
            }
            Value::Object(h)
        })
        .collect();
    m.insert("headers".into(), Value::Array(headers));
    m.insert("body_length".into(), json!(msg.body().len()));
    Value::Object(m)
}

fn typed(name: HeaderName, value: &str) -> Option<Result<Value, sip::Error>> {
    use HeaderName as H;
    let list = |f: fn(&str) -> Result<Value, sip::Error>| -> Result<Value, sip::Error> {
        sip::scan::split_list(value).map(f).collect::<Result<Vec<_>, _>>().map(Value::Array)
    };
    Some(match name {
        H::Via => list(|v| {
            let v = sip::Via::parse(v)?;
            Ok(json!({
                "protocol": format!("{}/{}", v.protocol_name, v.protocol_version),
                "transport": v.transport,
                "host": v.host.to_string(),
                "port": v.port,
                "branch": v.branch(),
                "params": params_json(v.params),
            }))
        }),
        H::From | H::To | H::PChargeInfo | H::ReferTo | H::ReferredBy => {
            NameAddr::parse(value).map(|n| name_addr_json(&n))
        }
        H::Contact if sip::scan::trim_lws(value) == "*" => Ok(json!("*")),
        H::Contact
        | H::Route
        | H::RecordRoute
        | H::Path
        | H::PAssertedIdentity
        | H::PPreferredIdentity
        | H::RemotePartyId
        | H::Diversion
        | H::Geolocation => {
            headers::parse_name_addr_list(value).map(|l| Value::Array(l.iter().map(name_addr_json).collect()))
        }
        H::CallId => Ok(json!(sip::scan::trim_lws(value))),
        H::CSeq => sip::CSeq::parse(value).map(|c| json!({"seq": c.seq, "method": c.method.as_str()})),
        H::MaxForwards | H::ContentLength | H::Expires | H::MinExpires | H::RSeq => {
            headers::parse_number(value).map(|n| json!(n))
        }
        H::ContentType => sip::MediaType::parse(value)
            .map(|t| json!({"type": t.kind, "subtype": t.subtype, "params": params_json(t.params)})),
        H::Authorization | H::ProxyAuthorization | H::WwwAuthenticate | H::ProxyAuthenticate => sip::Auth::parse(value)
            .map(|a| {
                let params: Map<String, Value> = sip::scan::split_list(a.params)
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, _)| {
                        let k = sip::scan::trim_lws(k);
                        (k.to_owned(), json!(a.param(k).map(|v| v.into_owned())))
                    })
                    .collect();
                json!({"scheme": a.scheme, "params": params})
            }),
        H::Supported | H::Require | H::ProxyRequire | H::Unsupported | H::Allow => {
            headers::parse_token_list(value).map(|t| json!(t))
        }
        H::Privacy => headers::parse_privacy(value).map(|t| json!(t)),
        H::Reason => list(|v| {
            let r = sip::Reason::parse(v)?;
            Ok(json!({"protocol": r.protocol, "cause": r.cause(), "text": r.text().map(|t| t.into_owned())}))
        }),
        H::Identity => list(|v| {
            let i = sip::Identity::parse(v)?;
            Ok(json!({"token": i.token, "info": i.info(), "alg": i.alg(), "ppt": i.ppt()}))
        }),
        _ => return None,
    })
}

fn name_addr_json(n: &NameAddr<'_>) -> Value {
    json!({
        "display_name": n.display_name_text().map(|d| d.into_owned()),
        "uri": uri_json(n.uri_str, Some(&n.uri)),
        "params": params_json(n.params),
    })
}

fn uri_json(raw: &str, uri: Option<&Uri<'_>>) -> Value {
    let mut m = Map::new();
    m.insert("raw".into(), json!(raw));
    match uri {
        Some(Uri::Sip(s)) => {
            m.insert("scheme".into(), json!(if s.secure { "sips" } else { "sip" }));
            m.insert("user".into(), json!(s.user));
            if let Some(p) = s.password {
                m.insert("password".into(), json!(p));
            }
            m.insert("host".into(), json!(s.host.to_string()));
            m.insert("port".into(), json!(s.port));
            m.insert("params".into(), params_json(s.params));
            if let Some(h) = s.headers {
                m.insert("headers".into(), json!(h));
            }
        }
        Some(Uri::Tel(t)) => {
            m.insert("scheme".into(), json!("tel"));
            m.insert("number".into(), json!(t.number));
            m.insert("params".into(), params_json(t.params));
        }
        Some(Uri::Other(o)) => {
            m.insert("scheme".into(), json!(o.scheme));
        }
        None => {}
    }
    Value::Object(m)
}

fn params_json(p: Params<'_>) -> Value {
    Value::Array(p.iter().map(|(k, v)| json!([k, v])).collect())
}
