//! Lenient deserializers for numbers and booleans.
//!
//! The ECS API (and the samples in its documentation) sometimes sends numbers and
//! booleans as strings (`"InvocationCount": "2"`, `"Disabled": "false"`). These
//! helpers accept either form so one stray string never fails a whole response,
//! and reject anything else with a clear serde error rather than guessing.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

#[derive(Clone, Copy)]
struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer or a string holding one")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // `3.0` is an integer in JSON's eyes; `3.5` or `-1.0` is not a count.
        if v.fract() == 0.0 && v >= 0.0 && v <= u64::MAX as f64 {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse::<u64>()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

#[derive(Clone, Copy)]
struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean or the string \"true\" or \"false\"")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        let t = v.trim();
        if t.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if t.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
}

/// Wraps a visitor so `null` (and an empty string) become `None`.
struct OptionVisitor<V>(V);

impl<'de, V: Visitor<'de> + Copy> Visitor<'de> for OptionVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(", or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.visit_bool(v).map(Some)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v).map(Some)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v).map(Some)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim().is_empty() {
            Ok(None)
        } else {
            self.0.visit_str(v).map(Some)
        }
    }
}

/// A `u64` sent as a JSON number or as a string of digits.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// A `bool` sent as a JSON boolean or as `"true"` / `"false"`.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

/// Like [`lenient_u64`], with `null` or `""` meaning absent; pair with `#[serde(default)]`.
pub fn option_lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(OptionVisitor(U64Visitor))
}

/// Like [`lenient_bool`], with `null` or `""` meaning absent; pair with `#[serde(default)]`.
pub fn option_lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_option(OptionVisitor(BoolVisitor))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "super::lenient_u64")]
        n: u64,
        #[serde(deserialize_with = "super::lenient_bool")]
        b: bool,
        #[serde(default, deserialize_with = "super::option_lenient_u64")]
        on: Option<u64>,
        #[serde(default, deserialize_with = "super::option_lenient_bool")]
        ob: Option<bool>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn accepts_native_and_string_forms() {
        let p = probe(r#"{"n":2,"b":true,"on":"7","ob":"false"}"#).ok();
        let p = p.map(|p| (p.n, p.b, p.on, p.ob));
        assert_eq!(p, Some((2, true, Some(7), Some(false))));
        let p = probe(r#"{"n":"2","b":"false","on":3,"ob":true}"#).ok();
        let p = p.map(|p| (p.n, p.b, p.on, p.ob));
        assert_eq!(p, Some((2, false, Some(3), Some(true))));
        let p = probe(r#"{"n":" 10 ","b":"TRUE","on":4.0}"#).ok();
        let p = p.map(|p| (p.n, p.b, p.on, p.ob));
        assert_eq!(p, Some((10, true, Some(4), None)));
    }

    #[test]
    fn null_and_empty_mean_absent_for_options() {
        let p = probe(r#"{"n":0,"b":false,"on":null,"ob":""}"#).ok();
        assert_eq!(p.map(|p| (p.on, p.ob)), Some((None, None)));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for bad in [
            r#"{"n":"two","b":true}"#,
            r#"{"n":-1,"b":true}"#,
            r#"{"n":1.5,"b":true}"#,
            r#"{"n":1,"b":"yes"}"#,
            r#"{"n":1,"b":1}"#,
            r#"{"n":[1],"b":true}"#,
            r#"{"n":1,"b":true,"on":"x"}"#,
            r#"{"n":1,"b":true,"ob":{}}"#,
            r#"{"n":"99999999999999999999","b":true}"#,
        ] {
            let err = probe(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("invalid")),
                "{bad} gave {err:?}"
            );
        }
    }
}
