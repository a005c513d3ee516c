//! Inputs the fuzz targets in `fuzz/` found, minimized with `cargo fuzz tmin`, replayed through
//! the very checks the targets run (`fuzz/src/checks.rs`, included below). Each failed on the
//! commit named above it and passes since the fix. A new find that is not fixed yet goes in as
//! `#[ignore = "fuzz bug: <short>"]` until it is. See `fuzz/README.md`.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

fn message(data: &[u8]) {
    checks::message(data);
}

fn uri(s: &str) {
    checks::uri(s.as_bytes());
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

// ---- Found on 7905be8, fixed in 4656a78. ----

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

// ---- Found on 4656a78 (the first from seed RFC 4475 baddn.sip), fixed in 8299ca1. ----

/// A datagram without the empty line after its headers was parsed with one added, and `to_bytes`
/// of the untouched message returned the added bytes too instead of the datagram as received.
#[test]
fn untouched_datagram_without_empty_line_serializes_as_received() {
    message(b"O t SIP/2.0");
}

/// `Display` of an absolute URI lowercases its scheme, which parsed back to an unequal `Uri`
/// (the scheme compared case-sensitively).
#[test]
fn absolute_uri_display_round_trip() {
    uri("S:t");
}

// ---- Found on db7a10d, fixed in 9d2c75a. ----
//
// `frame` took a field name as `trim_ws(&line[..colon])`: it stripped CR, LF, spaces and tabs at
// both ends and never checked for a token, and `HeaderName::from_bytes` folds CR onto `-`. So
// `frame` cut the stream by a Content-Length line that `Message::parse` drops as malformed: the
// framer and the parser disagreed on where the next message starts.

#[test]
fn frame_content_length_name_after_cr() {
    message(b"E  \n\rl:0\n\n");
}

#[test]
fn frame_content_length_name_before_cr() {
    message(b"R  \nl\r:0\n\n");
}

#[test]
fn frame_content_length_name_with_inner_cr() {
    message(b"U  \nContent\rLength:0\n\n");
}

/// Not a fuzzer find: written by hand from the same cause (the parser calls the line a fold).
#[test]
fn frame_content_length_in_folded_first_line() {
    message(b"E  \n l:0\n\n");
}
