//! Reading and validating a JSON request body field by field, collecting every fault (each
//! with its JSON pointer) so a client learns all that is wrong at once. A request with any
//! fault stores nothing.

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorObject};

/// The request body's fields, and the faults found so far.
pub struct Fields {
    map: Map<String, Value>,
    pub errors: Vec<ErrorObject>,
}

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields { map, errors: Vec::new() }),
            Ok(_) => Err(ApiError::bad_request("The request body must be a JSON object.")),
            Err(_) => Err(ApiError::bad_request("The request failed because it was not well-formed.")),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn pointer(name: &str) -> String {
        format!("/{name}")
    }

    /// A string of `min..=max` characters; `None` when absent (or null and `nullable`).
    pub fn string(&mut self, name: &str, required: bool, min: usize, max: usize) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.push(ErrorObject::required(&Self::pointer(name)));
                }
                None
            }
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min || n > max {
                    self.errors.push(ErrorObject::invalid_value(
                        &Self::pointer(name),
                        format!("Must be between {min} and {max} characters long."),
                    ));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be a string."));
                None
            }
        }
    }

    /// One of `allowed`; `default` when absent.
    pub fn one_of(&mut self, name: &str, allowed: &[&str], default: Option<&str>) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => default.map(str::to_owned),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_enum(&Self::pointer(name), allowed));
                None
            }
        }
    }

    /// An integer in `min..=max`; `default` when absent; `Some(None)` for an explicit null when
    /// `nullable`.
    pub fn integer(
        &mut self,
        name: &str,
        min: i64,
        max: i64,
        default: Option<i64>,
        nullable: bool,
    ) -> Option<Option<i64>> {
        match self.map.get(name) {
            None => Some(default),
            Some(Value::Null) if nullable => Some(None),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) => Some(n.as_i64()),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(
                    &Self::pointer(name),
                    format!("Must be an integer between {min} and {max}."),
                ));
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &str, default: Option<bool>) -> Option<bool> {
        match self.map.get(name) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be true or false."));
                None
            }
        }
    }

    /// A string or null (e.g. an id reference); `Some(None)` for null or absent.
    pub fn nullable_string(&mut self, name: &str) -> Option<Option<String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be a string or null."));
                None
            }
        }
    }

    /// `Err` with every fault collected, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(self.errors)) }
    }
}

/// Validators for lists, decimal strings, numbers and nested objects (first used by
/// outbound voice profiles).
impl Fields {
    /// An array of strings, each accepted by `valid` (a fault at `/name/INDEX` with `detail`
    /// otherwise); `default` when absent or null.
    pub fn string_list(
        &mut self,
        name: &str,
        default: Option<&[&str]>,
        valid: impl Fn(&str) -> bool,
        detail: &str,
    ) -> Option<Vec<String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => default.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut faults = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) if valid(s) => out.push(s.to_owned()),
                        _ => faults.push(ErrorObject::invalid_value(&format!("/{name}/{i}"), detail)),
                    }
                }
                if faults.is_empty() {
                    Some(out)
                } else {
                    self.errors.extend(faults);
                    None
                }
            }
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be an array of strings."));
                None
            }
        }
    }

    /// A non-negative decimal amount written as a string (`"100.00"`): digits, then optionally
    /// a point and 1 to `max_scale` digits. `Some(None)` when absent or null.
    pub fn decimal_string(&mut self, name: &str, max_scale: usize) -> Option<Option<String>> {
        let ok = |s: &str| {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            s.len() <= 24
                && !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && (!s.contains('.') || (1..=max_scale).contains(&frac.len()))
                && frac.bytes().all(|b| b.is_ascii_digit())
        };
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if ok(s) => Some(Some(s.clone())),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(
                    &Self::pointer(name),
                    format!("Must be a decimal amount as a string, such as \"100.00\" (at most {max_scale} decimals)."),
                ));
                None
            }
        }
    }

    /// A JSON number (integer or not) of at least `min`, kept as written. `Some(None)` when
    /// absent or null.
    pub fn number(&mut self, name: &str, min: f64) -> Option<Option<serde_json::Number>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v >= min) => Some(Some(n.clone())),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(
                    &Self::pointer(name),
                    format!("Must be a number greater than or equal to {min}."),
                ));
                None
            }
        }
    }

    /// A string accepted by `valid` (a fault with `detail` otherwise). `Some(None)` when absent
    /// or null.
    pub fn string_matching(
        &mut self,
        name: &str,
        valid: impl Fn(&str) -> bool,
        detail: &str,
    ) -> Option<Option<String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if valid(s) => Some(Some(s.clone())),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), detail));
                None
            }
        }
    }

    /// A nested object, to validate with the same methods; hand it back with
    /// [`Fields::absorb`] so its faults join this body's under `/name/...`. `Some(None)` when
    /// absent or null.
    pub fn object(&mut self, name: &str) -> Option<Option<Fields>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Object(map)) => Some(Some(Fields { map: map.clone(), errors: Vec::new() })),
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be an object."));
                None
            }
        }
    }

    /// Takes the faults of the nested object `name` (from [`Fields::object`]), their pointers
    /// prefixed with `/name`.
    pub fn absorb(&mut self, name: &str, inner: Fields) {
        self.errors.extend(inner.errors.into_iter().map(|mut e| {
            e.pointer = Some(format!("/{name}{}", e.pointer.as_deref().unwrap_or("")));
            e
        }));
    }
}

/// Raw looks at a field: whether it was sent as null, and its value as sent (first used by the
/// connection types, whose null resets a field to its default and whose rules look across
/// fields).
impl Fields {
    /// Whether `name` was sent as JSON null.
    pub fn is_null(&self, name: &str) -> bool {
        matches!(self.map.get(name), Some(Value::Null))
    }

    /// The value of `name` as sent, unvalidated; `None` when absent.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
}

/// Arrays of objects (first used by carriers' gateways).
impl Fields {
    /// An array of objects, each to validate with the same methods and hand back with
    /// [`Fields::absorb`] under `"name/INDEX"` so its faults read `/name/INDEX/...`.
    /// `Some(None)` when absent or null; a fault at `/name/INDEX` for an item that is not an
    /// object, at `/name` when the value is not an array.
    pub fn object_list(&mut self, name: &str) -> Option<Option<Vec<Fields>>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut faults = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(map) => out.push(Fields { map: map.clone(), errors: Vec::new() }),
                        _ => faults.push(ErrorObject::invalid_value(&format!("/{name}/{i}"), "Must be an object.")),
                    }
                }
                if faults.is_empty() {
                    Some(Some(out))
                } else {
                    self.errors.extend(faults);
                    None
                }
            }
            Some(_) => {
                self.errors.push(ErrorObject::invalid_value(&Self::pointer(name), "Must be an array of objects."));
                None
            }
        }
    }
}
