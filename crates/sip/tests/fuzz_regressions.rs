//! Inputs the fuzz targets in `fuzz/` found, minimized with `cargo fuzz tmin`, replayed through
//! the very checks the targets run (`fuzz/src/checks.rs`, included below) in strict mode. A test
//! marked `#[ignore = "fuzz bug: ..."]` pins a bug that is still open: it fails today; remove the
//! `ignore` (and the matching guard in `checks.rs`) once the parser is fixed. See `fuzz/README.md`.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

fn message(data: &[u8]) {
    checks::message(data, true);
}

fn uri(s: &str) {
    checks::uri(s.as_bytes(), true);
}

/// The harness itself passes on ordinary input, so a failure below is the parser's.
#[test]
fn checks_pass_on_well_formed_input() {
    message(
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/TCP h\r\n\
          Max-Forwards: 70\r\nFrom: \"A\" <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
          Call-ID: c@h\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>;q=0.5\r\nContent-Type: application/sdp\r\n\
          Content-Length: 4\r\n\r\nv=0\n",
    );
    message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
    message(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    uri("sips:user:pw@[2001:db8::1]:5061;transport=tcp?subject=x");
    uri("tel:+1-201-555-0123;phone-context=example.com");
    uri("\"Bob\" <sip:bob@example.com>;tag=x");
}

// ---- Fixed in 4656a78 (found by the fuzzer on 7905be8): kept as regression tests. ----

/// `frame` indexed the first byte of an empty header name (headers.rs `HeaderName::from_bytes`).
#[test]
fn frame_header_line_with_empty_name() {
    message(b"t\n:\n\n");
}

/// A status line without a reason phrase took the offset of a `""` literal outside the line
/// (message.rs `parse_start_line`: subtract with overflow).
#[test]
fn status_line_without_reason_phrase() {
    message(b"SIP/ 202");
}

/// A first header line starting with whitespace was accepted as a header; a header inserted
/// above it by a proxy then swallowed it as a continuation line.
#[test]
fn first_header_line_folded() {
    message(b"E s SIP/2.0\n p:");
}

// ---- Open. ----

/// A datagram without the empty line after its headers is parsed with one added, and
/// `to_bytes` of the untouched message returns those added bytes instead of the original
/// (the doc promises the original bytes). RFC 4475 `baddn.sip` is such a datagram.
#[test]
fn untouched_datagram_without_empty_line_serializes_as_received() {
    message(b"A b SIP/2.0\r\n");
}

/// `Display` of an absolute URI lowercases its scheme, which parses back to a different `Uri`
/// (`AbsoluteUri::scheme` is kept as written and compared case-sensitively).
#[test]
fn absolute_uri_display_round_trip() {
    uri("A:b");
}
