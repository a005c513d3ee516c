//! The decision trace: every rule a decision evaluated, in order, with its verdict and the
//! values it looked at. It goes into the CDR and the portal's per-call view, so an operator
//! can answer "why was this call rejected / billed / routed like that" without reading logs.
//!
//! Cheap by construction: rule names and fact names are `&'static str`; values are small.

use serde::Serialize;
use serde::ser::SerializeMap;

/// What a rule concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The rule held; evaluation went on.
    Pass,
    /// The rule failed: the decision ends here (a rejection or a challenge).
    Fail,
    /// The rule did not apply (not configured, or exempt, such as an emergency call).
    Skip,
    /// A fact was established (the connection identified, a rate found, a route chosen).
    Note,
}

/// A value a rule looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(Box<str>),
    Static(&'static str),
    Int(i64),
    Bool(bool),
    /// An exact decimal (a rate, a cost, a spend), as text.
    Decimal(rust_decimal::Decimal),
    Absent,
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::Static(v) => s.serialize_str(v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Decimal(v) => s.serialize_str(&v.to_string()),
            Value::Absent => s.serialize_none(),
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v.into_boxed_str())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<rust_decimal::Decimal> for Value {
    fn from(v: rust_decimal::Decimal) -> Self {
        Value::Decimal(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Absent, Into::into)
    }
}

/// One evaluated rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Dotted rule name, stable for tooling: `identify.ip_token`, `outbound.caller_id`, ...
    pub rule: &'static str,
    pub verdict: Verdict,
    /// The values the rule looked at, by name (serialized as an object, in order).
    #[serde(serialize_with = "facts_as_map")]
    pub facts: Vec<(&'static str, Value)>,
}

fn facts_as_map<S: serde::Serializer>(facts: &[(&'static str, Value)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(facts.len()))?;
    for (k, v) in facts {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

/// The rules a decision evaluated, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Trace {
    pub steps: Vec<Step>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace { steps: Vec::with_capacity(16) }
    }

    /// Records a rule with its facts.
    pub fn step(&mut self, rule: &'static str, verdict: Verdict, facts: Vec<(&'static str, Value)>) {
        self.steps.push(Step { rule, verdict, facts });
    }

    pub fn pass(&mut self, rule: &'static str, facts: Vec<(&'static str, Value)>) {
        self.step(rule, Verdict::Pass, facts);
    }

    pub fn fail(&mut self, rule: &'static str, facts: Vec<(&'static str, Value)>) {
        self.step(rule, Verdict::Fail, facts);
    }

    pub fn skip(&mut self, rule: &'static str, facts: Vec<(&'static str, Value)>) {
        self.step(rule, Verdict::Skip, facts);
    }

    pub fn note(&mut self, rule: &'static str, facts: Vec<(&'static str, Value)>) {
        self.step(rule, Verdict::Note, facts);
    }

    /// The step that failed, if any (the reason a decision ended).
    pub fn failed(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.verdict == Verdict::Fail)
    }

    /// Whether a rule was evaluated.
    pub fn has(&self, rule: &str) -> bool {
        self.steps.iter().any(|s| s.rule == rule)
    }

    /// The first step of a rule.
    pub fn get(&self, rule: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.rule == rule)
    }
}

impl Step {
    /// A fact's value by name.
    pub fn fact(&self, name: &str) -> Option<&Value> {
        self.facts.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_ordered_objects() {
        let mut t = Trace::new();
        t.note("identify.source", vec![("ip", "192.0.2.1".into()), ("matches", 2u64.into())]);
        t.fail("outbound.caller_id", vec![("number", "123".into()), ("localization", Value::Static("US"))]);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"[{"rule":"identify.source","verdict":"note","facts":{"ip":"192.0.2.1","matches":2}},{"rule":"outbound.caller_id","verdict":"fail","facts":{"number":"123","localization":"US"}}]"#
        );
        assert_eq!(t.failed().unwrap().rule, "outbound.caller_id");
        assert_eq!(t.get("identify.source").unwrap().fact("matches"), Some(&Value::Int(2)));
    }
}
