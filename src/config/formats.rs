//! How values whose Rust type says nothing about their written form are
//! written in the file, as JSON Schema: durations (`"5m"`, parsed by
//! humantime) and sizes (`"500MiB"` or a number of bytes, parsed by
//! bytesize). Fields name these with `#[schemars(with = "...")]`. And
//! enums, written as one of their snake_case names ([`string_enum!`]).
//!
//! The lowest file of `config/`: imports nothing from it. Only shapes; the
//! parsing stays with the crates that do it, and the unit tests below hold
//! the patterns to what those crates accept.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;
use std::borrow::Cow;

/// humantime's units, longest first (the order does not change what the
/// pattern matches, only how fast a backtracking engine finds it).
const DURATION_UNITS: &[&str] = &[
    "nanos", "nsec", "ns", "usec", "us", "µs", "millis", "msec", "ms", "seconds", "second", "secs",
    "sec", "s", "minutes", "minute", "mins", "min", "m", "hours", "hour", "hrs", "hr", "h", "days",
    "day", "d", "weeks", "week", "wks", "wk", "w", "months", "month", "M", "years", "year", "yrs",
    "yr", "y",
];

/// A duration as humantime writes it: `"30s"`, `"5m"`, `"1h 30m"`, `"100ms"`.
pub struct HumanDuration;

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let units = DURATION_UNITS.join("|");
        json_schema!({
            "type": "string",
            "pattern": format!("^\\s*(?:\\d+(?:\\.\\d+)?\\s*(?:{units})\\s*)+$"),
            "examples": ["30s", "5m", "1h 30m", "100ms"],
        })
    }
}

/// A size: a number of bytes, or a string with a unit (`"500MiB"`,
/// `"2 GB"`; units are case-insensitive, `Ki`/`KiB` are powers of 1024).
pub struct HumanSize;

impl JsonSchema for HumanSize {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                {
                    "type": "string",
                    "pattern": "^(?:\\d+|(?:\\d+\\.?\\d*|\\.\\d+)\\s*(?:[bB]|[kKmMgGtTpPeE][iI]?[bB]?))$",
                },
            ],
            "examples": ["500MiB", "2GiB", 1048576],
        })
    }
}

/// TOML has no null: an absent key says "none". So an optional key
/// neither admits null (schemars' schema of an `Option` does) nor shows
/// `default: null`, which would only mislead an editor into writing one.
/// A transform over every subschema.
pub fn without_null(schema: &mut Schema) {
    if schema.get("default").is_some_and(Value::is_null) {
        schema.remove("default");
    }
    // `"type": ["string", "null"]` → `"type": "string"`.
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema.insert("type".into(), only);
        }
    }
    // `"anyOf": [{"$ref": ...}, {"type": "null"}]` → `"$ref": ...`.
    let is_null = |v: &Value| v.get("type").is_some_and(|t| t == "null");
    let non_null = match schema.get("anyOf") {
        Some(Value::Array(any)) if any.len() == 2 && any.iter().any(is_null) => any
            .iter()
            .find(|v| !is_null(v))
            .and_then(Value::as_object)
            .cloned(),
        _ => None,
    };
    if let Some(other) = non_null {
        schema.remove("anyOf");
        for (k, v) in other {
            schema.insert(k, v);
        }
    }
}

/// Implements `Deserialize` for a config enum from its snake_case names, so
/// that a wrong value is reported with the allowed ones (config's own enum
/// support does not list them); `Serialize` and the JSON Schema (an `enum`
/// of the same names) come from the same list.
macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match self {
                    $($ty::$variant => $name,)+
                })
            }
        }
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": Self::NAMES })
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                match s.as_str() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "unknown value `{other}`; allowed: {}",
                        Self::NAMES.join(", ")
                    ))),
                }
            }
        }
    };
}
pub(super) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern<T: JsonSchema>(pointer: &str) -> regex::Regex {
        let schema = schemars::schema_for!(T);
        let p = schema
            .as_value()
            .pointer(pointer)
            .unwrap()
            .as_str()
            .unwrap();
        regex::Regex::new(p).unwrap()
    }

    #[test]
    fn duration_pattern_agrees_with_humantime() {
        let re = pattern::<HumanDuration>("/pattern");
        let mut candidates: Vec<String> = [
            "",
            " ",
            "5",
            "s",
            "5 m",
            "1h 30m",
            "1h30m",
            "5m30s",
            "100ms",
            "1.5s",
            "1.s",
            "2days",
            "3 weeks",
            "1M",
            "1µs",
            "10x",
            "-5s",
            "5s,",
            "PT5M",
            "1 hour 2 minutes",
        ]
        .map(str::to_owned)
        .into();
        candidates.extend(DURATION_UNITS.iter().map(|u| format!("7{u}")));
        for c in &candidates {
            let parsed = humantime::parse_duration(c);
            assert_eq!(re.is_match(c), parsed.is_ok(), "{c:?}: {parsed:?}");
        }
    }

    #[test]
    fn size_pattern_agrees_with_bytesize() {
        let re = pattern::<HumanSize>("/anyOf/1/pattern");
        for c in [
            "", "100", "500MiB", "2 GiB", "2GB", "1.5 g", "1k", "1Ki", "7 b", ".5MB", "1.MB",
            "1.5", "MiB", "5 XB", "-1", "1e3",
        ] {
            let parsed = c.parse::<bytesize::ByteSize>();
            assert_eq!(re.is_match(c), parsed.is_ok(), "{c:?}: {parsed:?}");
        }
    }
}
