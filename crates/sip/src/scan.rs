//! The lexical layer of RFC 3261 section 25: character classes, linear whitespace (including
//! folded lines), tokens, quoted strings and generic parameters. Everything here works on
//! borrowed text and never allocates.

use crate::Error;

const TOKEN: u8 = 1;
const WORD: u8 = 2;
const UNRESERVED: u8 = 4;
const USER_UNRESERVED: u8 = 8;
const PARAM_UNRESERVED: u8 = 16;
const HNV_UNRESERVED: u8 = 32;
const PASSWORD_EXTRA: u8 = 64;
const HOSTNAME: u8 = 128;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] |= TOKEN | WORD | UNRESERVED | HOSTNAME;
        }
        c += 1;
    }
    let token = b"-.!%*_+`'~";
    let mut i = 0;
    while i < token.len() {
        t[token[i] as usize] |= TOKEN | WORD;
        i += 1;
    }
    let word = b"()<>:\\\"/[]?{}";
    i = 0;
    while i < word.len() {
        t[word[i] as usize] |= WORD;
        i += 1;
    }
    let mark = b"-_.!~*'()";
    i = 0;
    while i < mark.len() {
        t[mark[i] as usize] |= UNRESERVED;
        i += 1;
    }
    let user = b"&=+$,;?/";
    i = 0;
    while i < user.len() {
        t[user[i] as usize] |= USER_UNRESERVED;
        i += 1;
    }
    let param = b"[]/:&+$";
    i = 0;
    while i < param.len() {
        t[param[i] as usize] |= PARAM_UNRESERVED;
        i += 1;
    }
    let hnv = b"[]/?:+$";
    i = 0;
    while i < hnv.len() {
        t[hnv[i] as usize] |= HNV_UNRESERVED;
        i += 1;
    }
    let pw = b"&=+$,";
    i = 0;
    while i < pw.len() {
        t[pw[i] as usize] |= PASSWORD_EXTRA;
        i += 1;
    }
    t[b'-' as usize] |= HOSTNAME;
    t[b'.' as usize] |= HOSTNAME;
    t
}

static CLASS: [u8; 256] = classes();

#[inline]
pub fn is_token(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}
#[inline]
pub fn is_word(b: u8) -> bool {
    CLASS[b as usize] & WORD != 0
}
#[inline]
pub fn is_unreserved(b: u8) -> bool {
    CLASS[b as usize] & UNRESERVED != 0
}
#[inline]
pub fn is_user_unreserved(b: u8) -> bool {
    CLASS[b as usize] & USER_UNRESERVED != 0
}
#[inline]
pub fn is_param_unreserved(b: u8) -> bool {
    CLASS[b as usize] & PARAM_UNRESERVED != 0
}
#[inline]
pub fn is_hnv_unreserved(b: u8) -> bool {
    CLASS[b as usize] & HNV_UNRESERVED != 0
}
#[inline]
pub fn is_password_extra(b: u8) -> bool {
    CLASS[b as usize] & PASSWORD_EXTRA != 0
}
#[inline]
pub fn is_hostname(b: u8) -> bool {
    CLASS[b as usize] & HOSTNAME != 0
}

/// `true` when `s` is a non-empty `token` (RFC 3261 section 25.1).
pub fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// `true` when `s` holds only `word` characters (Call-ID halves).
pub fn is_word_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_word)
}

/// Length of the linear whitespace at the start of `b`: spaces, tabs and folded line breaks
/// (CRLF followed by at least one space or tab). A bare CRLF is not whitespace: it ends a line.
#[inline]
pub fn lws_len(b: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match b.get(i) {
            Some(b' ' | b'\t') => i += 1,
            Some(b'\r') if b.get(i + 1) == Some(&b'\n') && matches!(b.get(i + 2), Some(b' ' | b'\t')) => i += 3,
            Some(b'\n') if matches!(b.get(i + 1), Some(b' ' | b'\t')) => i += 2,
            _ => return i,
        }
    }
}

/// Trims linear whitespace (including folds) from both ends.
pub fn trim_lws(s: &str) -> &str {
    let start = lws_len(s.as_bytes());
    let s = &s[start..];
    let b = s.as_bytes();
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over header-value text. Positions are byte offsets into the borrowed string, so
/// every slice it returns borrows the message buffer.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }
    #[inline]
    pub fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }
    #[inline]
    pub fn src(&self) -> &'a str {
        self.s
    }
    #[inline]
    pub fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    #[inline]
    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }
    #[inline]
    pub fn skip_lws(&mut self) -> usize {
        // Most calls find no whitespace at all: answer those from one byte, inline.
        if !matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            return 0;
        }
        let n = lws_len(self.s.as_bytes().get(self.pos..).unwrap_or_default());
        self.pos += n;
        n
    }
    /// Consumes `b` if it is next.
    #[inline]
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    /// Consumes `SWS b SWS` (the separators of RFC 3261 section 25.1) if `b` is next after
    /// optional whitespace; otherwise leaves the cursor where it was.
    pub fn eat_sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.eat(b) {
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }
    /// Consumes the longest run of bytes matching `f`.
    #[inline]
    pub fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        while i < b.len() && f(b[i]) {
            i += 1;
        }
        self.pos = i;
        // Every predicate used stops only at ASCII bytes or at the end, so this is a char
        // boundary; `get` keeps it panic-free even if a caller passes a predicate that doesn't.
        self.s.get(start..i).unwrap_or("")
    }
    /// A non-empty token.
    pub fn token(&mut self) -> Result<&'a str, Error> {
        let t = self.take_while(is_token);
        if t.is_empty() { Err(Error("expected a token")) } else { Ok(t) }
    }
    /// A quoted string (the cursor is on the opening quote). Returns the text between the
    /// quotes, escapes left as written.
    pub fn quoted_string(&mut self) -> Result<&'a str, Error> {
        if !self.eat(b'"') {
            return Err(Error("expected a quoted string"));
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(&self.s[start..i]);
                }
                b'\\' => {
                    // quoted-pair: any octet except CR and LF may follow.
                    match b.get(i + 1) {
                        Some(b'\r' | b'\n') | None => return Err(Error("bad escape in quoted string")),
                        Some(_) => i += 2,
                    }
                }
                b'\r' | b'\n' => {
                    let n = lws_len(&b[i..]);
                    if n == 0 {
                        return Err(Error("line break in quoted string"));
                    }
                    i += n;
                }
                _ => i += 1,
            }
        }
        Err(Error("unterminated quoted string"))
    }
}

/// Generic parameters (`;name[=value]` repeated), kept as the raw text that starts at the first
/// `;`. Iteration parses lazily; values that are quoted strings come back with their quotes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps text that starts with `;` (or is empty) and has already been validated by
    /// [`parse_params`] or [`crate::uri`].
    pub fn from_raw(raw: &'a str) -> Self {
        Params { raw }
    }
    /// The parameters as written, from the first `;`.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { c: Cursor::new(self.raw) }
    }
    /// The parameter named `name` (case-insensitive). `Some(None)` is a flag parameter.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

pub struct ParamIter<'a> {
    c: Cursor<'a>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);
    fn next(&mut self) -> Option<Self::Item> {
        if !self.c.eat_sep(b';') {
            return None;
        }
        let name = self.c.take_while(|b| b != b'=' && b != b';' && !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if self.c.eat_sep(b'=') {
            let v = if self.c.peek() == Some(b'"') {
                let start = self.c.pos();
                match self.c.quoted_string() {
                    Ok(_) => &self.c.src()[start..self.c.pos()],
                    Err(_) => self.c.take_while(|b| b != b';'),
                }
            } else {
                self.c.take_while(|b| b != b';' && !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            };
            Some((name, Some(v)))
        } else {
            Some((name, None))
        }
    }
}

/// Parses header parameters (`*( SEMI generic-param )`, RFC 3261 section 25.1) at the cursor,
/// validating each: the name is a token, the value a token, a host (IPv6 reference included) or
/// a quoted string. Stops before anything that is not `;` after optional whitespace.
pub fn parse_params<'a>(c: &mut Cursor<'a>) -> Result<Params<'a>, Error> {
    parse_params_finding(c, "").map(|(params, _)| params)
}

/// [`parse_params`], also returning what [`Params::get`] would give for `wanted` (the first
/// parameter so named, case-insensitive), found in the same pass.
pub fn parse_params_finding<'a>(
    c: &mut Cursor<'a>,
    wanted: &str,
) -> Result<(Params<'a>, Option<Option<&'a str>>), Error> {
    let start = c.pos();
    let mut end = start;
    let mut found = None;
    while c.eat_sep(b';') {
        let name = c.token().map_err(|_| Error("empty or malformed parameter"))?;
        let value_start = c.pos();
        let value = if c.eat_sep(b'=') {
            let value_start = c.pos();
            match c.peek() {
                Some(b'"') => {
                    c.quoted_string()?;
                }
                Some(b'[') => {
                    c.take_while(|b| b != b']' && (b.is_ascii_hexdigit() || b == b':' || b == b'.' || b == b'['));
                    if !c.eat(b']') {
                        return Err(Error("malformed IPv6 reference in parameter"));
                    }
                }
                _ => {
                    // gen-value is token / host; a host is token characters plus ':' for
                    // unbracketed IPv6 (RFC 5118 section 4.5 received=2001:db8::9:255).
                    let v = c.take_while(|b| is_token(b) || b == b':');
                    if v.is_empty() {
                        return Err(Error("empty parameter value"));
                    }
                }
            }
            // The value as `ParamIter` reads it: quotes kept, nothing around it.
            Some(&c.src()[value_start..c.pos()])
        } else {
            debug_assert_eq!(c.pos(), value_start);
            None
        };
        if found.is_none() && name.eq_ignore_ascii_case(wanted) {
            found = Some(value);
        }
        end = c.pos();
    }
    c.set_pos(end);
    let params = Params::from_raw(&c.src()[start..end]);
    debug_assert_eq!(found, if wanted.is_empty() { None } else { params.get(wanted) }, "parameter found differs");
    Ok((params, found))
}

/// Splits a header value on the commas that separate list elements, ignoring commas inside
/// quoted strings and angle brackets.
pub fn split_list(s: &str) -> ListIter<'_> {
    ListIter { s, pos: 0 }
}

pub struct ListIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.pos > self.s.len() {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        let mut in_quote = false;
        let mut in_angle = false;
        // Jumps from one byte that matters in the current state to the next (memchr), rather
        // than looking at every byte: in a quoted string only `"` and `\\` matter, inside
        // `<...>` only `"` and `>`, elsewhere `,`, `"` and `<`.
        while i < b.len() {
            let rest = &b[i..];
            let next = if in_quote {
                memchr::memchr2(b'"', b'\\', rest)
            } else if in_angle {
                memchr::memchr2(b'"', b'>', rest)
            } else {
                memchr::memchr3(b',', b'"', b'<', rest)
            };
            let Some(n) = next else {
                i = b.len();
                break;
            };
            i += n;
            match b[i] {
                b'\\' => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                _ => break, // ',' outside quotes and angle brackets
            }
            i += 1;
        }
        let end = i.min(b.len());
        self.pos = end + 1;
        Some(trim_lws(&self.s[start..end]))
    }
}

/// Parses a decimal number made only of digits (leading zeros allowed) that fits in `u32`.
pub fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v * 10 + u64::from(b - b'0');
        if v > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lws_covers_folding() {
        assert_eq!(lws_len(b"  \r\n\tx"), 5);
        assert_eq!(lws_len(b"\r\nx"), 0);
        assert_eq!(trim_lws(" a \r\n "), "a");
    }

    #[test]
    fn params_parse_and_iterate() {
        let mut c = Cursor::new(";branch=z9hG4bK1 ; rport;received=[2001:db8::9:255];x=\"a;b\" rest");
        let p = parse_params(&mut c).unwrap();
        assert_eq!(c.rest(), " rest");
        let v: Vec<_> = p.iter().collect();
        assert_eq!(
            v,
            vec![
                ("branch", Some("z9hG4bK1")),
                ("rport", None),
                ("received", Some("[2001:db8::9:255]")),
                ("x", Some("\"a;b\""))
            ]
        );
        assert_eq!(p.get("RPORT"), Some(None));
    }

    #[test]
    fn params_reject_empty() {
        assert!(parse_params(&mut Cursor::new(";;")).is_err());
        assert!(parse_params(&mut Cursor::new(";a=")).is_err());
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<_> = split_list("\"a,b\" <sip:x@y;p=1,2>, c ,d").collect();
        assert_eq!(v, vec!["\"a,b\" <sip:x@y;p=1,2>", "c", "d"]);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32("0009"), Some(9));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32(""), None);
    }
}
