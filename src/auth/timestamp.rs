//! The `x-lifecycle-timestamp` header: decimal Unix seconds, as an AMQP
//! integer or a string of digits (CONTRACT section 6).
//!
//! The signature covers the header's *text*, so the text is fixed here once:
//! a string exactly as sent (leading zeros included), an integer in its
//! decimal form without sign or leading zeros. Only ASCII digits are text a
//! timestamp may have: that is what makes `<timestamp>.<body>` split at its
//! first full stop, so no other (timestamp, body) pair has the same MAC input.

use lapin::types::AMQPValue;

/// Longest string form accepted: `u64::MAX` has 20 digits, and leading zeros
/// beyond a few are no one's clock.
const MAX_DIGITS: usize = 24;

/// A well-formed signing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    /// The text the MAC covers.
    pub text: String,
    /// Unix seconds.
    pub seconds: u64,
}

/// Why a timestamp header is not one (the message is safe to echo: it never
/// quotes the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// An AMQP integer below zero.
    #[error("is negative")]
    Negative,
    /// A string that is empty or has a character other than 0-9.
    #[error("is not a string of digits 0-9 (decimal Unix seconds)")]
    NotDigits,
    /// A string of digits too long for Unix seconds.
    #[error("has too many digits for Unix seconds")]
    TooLong,
    /// Another AMQP type: a float, a list, a table, a boolean, an AMQP timestamp...
    #[error("must be an AMQP integer or a string of digits")]
    WrongType,
}

impl Timestamp {
    /// Reads the header's value.
    pub fn from_header(value: &AMQPValue) -> Result<Self, TimestampError> {
        let n: i128 = match value {
            AMQPValue::ShortShortInt(n) => (*n).into(),
            AMQPValue::ShortShortUInt(n) => (*n).into(),
            AMQPValue::ShortInt(n) => (*n).into(),
            AMQPValue::ShortUInt(n) => (*n).into(),
            AMQPValue::LongInt(n) => (*n).into(),
            AMQPValue::LongUInt(n) => (*n).into(),
            AMQPValue::LongLongInt(n) => (*n).into(),
            AMQPValue::LongString(s) => return Self::from_text(s.as_bytes()),
            AMQPValue::ShortString(s) => return Self::from_text(s.as_str().as_bytes()),
            _ => return Err(TimestampError::WrongType),
        };
        let seconds = u64::try_from(n).map_err(|_| TimestampError::Negative)?;
        Ok(Self {
            text: seconds.to_string(),
            seconds,
        })
    }

    /// Reads a string form: one or more ASCII digits, kept as sent.
    pub fn from_text(bytes: &[u8]) -> Result<Self, TimestampError> {
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(TimestampError::NotDigits);
        }
        if bytes.len() > MAX_DIGITS {
            return Err(TimestampError::TooLong);
        }
        // Digits only, so this is UTF-8 and parses unless it overflows.
        let text = String::from_utf8_lossy(bytes).into_owned();
        let seconds = text.parse().map_err(|_| TimestampError::TooLong)?;
        Ok(Self { text, seconds })
    }

    /// The timestamp minus `now`, in seconds: negative when it is in the past.
    pub fn offset_from(&self, now: i64) -> i64 {
        let offset = i128::from(self.seconds) - i128::from(now);
        i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, FieldTable, LongString};

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn integers_and_digit_strings_are_timestamps() {
        let cases = [
            (AMQPValue::LongLongInt(1_700_000_000), "1700000000"),
            (AMQPValue::LongUInt(1_700_000_000), "1700000000"),
            (AMQPValue::LongInt(1_700_000_000), "1700000000"),
            (AMQPValue::ShortShortUInt(7), "7"),
            (AMQPValue::LongLongInt(0), "0"),
            (text("1700000000"), "1700000000"),
            (text("0001700000000"), "0001700000000"),
        ];
        for (value, want) in cases {
            let t = Timestamp::from_header(&value).expect("a timestamp");
            assert_eq!(t.text, want, "{value:?}");
            assert_eq!(t.seconds, want.parse::<u64>().expect("digits"));
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let cases = [
            (text(""), TimestampError::NotDigits),
            (text("-5"), TimestampError::NotDigits),
            (text("+1700000000"), TimestampError::NotDigits),
            (text(" 1700000000"), TimestampError::NotDigits),
            (text("1700000000 "), TimestampError::NotDigits),
            (text("1700000000.5"), TimestampError::NotDigits),
            (text("1.7e9"), TimestampError::NotDigits),
            (text("0x6553f100"), TimestampError::NotDigits),
            (text("١٧٠٠٠٠٠٠٠٠"), TimestampError::NotDigits),
            (text("99999999999999999999"), TimestampError::TooLong),
            (text(&"9".repeat(25)), TimestampError::TooLong),
            (AMQPValue::LongLongInt(-1), TimestampError::Negative),
            (AMQPValue::ShortShortInt(-1), TimestampError::Negative),
            (AMQPValue::Double(1.7e9), TimestampError::WrongType),
            (AMQPValue::Float(1.0), TimestampError::WrongType),
            (AMQPValue::Boolean(true), TimestampError::WrongType),
            (
                AMQPValue::Timestamp(1_700_000_000),
                TimestampError::WrongType,
            ),
            (
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongLongInt(1)])),
                TimestampError::WrongType,
            ),
            (
                AMQPValue::FieldTable(FieldTable::default()),
                TimestampError::WrongType,
            ),
            (AMQPValue::Void, TimestampError::WrongType),
        ];
        for (value, want) in cases {
            assert_eq!(Timestamp::from_header(&value), Err(want), "{value:?}");
        }
        assert_eq!(
            Timestamp::from_text(b"17\xff"),
            Err(TimestampError::NotDigits)
        );
    }

    #[test]
    fn offsets_have_a_sign_and_never_overflow() {
        let t = Timestamp::from_text(b"1000").expect("ts");
        assert_eq!(t.offset_from(1300), -300);
        assert_eq!(t.offset_from(700), 300);
        let far = Timestamp::from_header(&AMQPValue::LongLongInt(i64::MAX)).expect("ts");
        assert_eq!(far.offset_from(i64::MIN), i64::MAX);
        let max = Timestamp::from_text(b"18446744073709551615").expect("u64::MAX");
        assert_eq!(max.offset_from(0), i64::MAX);
    }
}
