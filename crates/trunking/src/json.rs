//! JSON text written straight into a string, for the records every call leaves (its decision
//! trace, its route attempts): serde_json's generic path escapes a byte at a time and grows
//! its string by doubling, and those records are written once per call.

/// Appends `s` as a JSON string, escaped as serde_json escapes it (`\"`, `\\`, the short forms
/// of `\b \t \n \f \r`, `\u00XX` for the other control characters; nothing else).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    // Nearly every text needs no escape: a test of every byte without an early exit, which the
    // compiler vectorises, then one copy.
    if !s.bytes().fold(false, |escaped, b| escaped | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut clean = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&s[clean..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push_str(short);
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_ascii_character_as_serde_json_writes_it() {
        for b in 0u8..0x80 {
            let one = format!("a{}b", char::from(b));
            let mut ours = String::new();
            super::push_str(&mut ours, &one);
            assert_eq!(ours, serde_json::to_string(&one).unwrap(), "byte {b:#04x}");
        }
    }
}
