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
