//! Safe echoing of untrusted text inside problem sentences.
//!
//! Rejections travel into events, dead-letter headers and logs that operators
//! read in terminals. Hostile input may be 64 KiB long or carry NULs, escape
//! sequences or right-to-left overrides that make a log line lie about its
//! content, so every piece of input quoted back goes through [`quote`].

/// How many characters of input a problem sentence quotes at most.
const MAX_QUOTED_CHARS: usize = 40;

/// Quotes untrusted text for a human sentence: only printable ASCII is kept as
/// is, everything else is escaped (`\n`, `\u{202e}`), and the result is cut
/// after [`MAX_QUOTED_CHARS`] input characters with a note of the full length.
pub(crate) fn quote(input: &str) -> String {
    let mut out = String::from("\"");
    for (count, c) in input.chars().enumerate() {
        if count == MAX_QUOTED_CHARS {
            let total = input.chars().count();
            out.push_str("\"… (");
            out.push_str(&total.to_string());
            out.push_str(" characters)");
            return out;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => out.extend(c.escape_default()),
        }
    }
    out.push('"');
    out
}

/// Describes a single offending character without printing it raw.
pub(crate) fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() && c != '\'' && c != '\\' {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_is_kept() {
        assert_eq!(quote("cn-hangzhou"), "\"cn-hangzhou\"");
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        let q = quote("a\u{0}b\n\u{202e}c\"");
        assert!(q.is_ascii());
        assert!(!q.contains('\n'));
        assert!(q.contains("\\u{202e}"));
        assert!(q.contains("\\\""));
    }

    #[test]
    fn long_input_is_truncated() {
        let long = "x".repeat(70_000);
        let q = quote(&long);
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("(70000 characters)"));
    }

    #[test]
    fn exact_limit_is_not_truncated() {
        let s = "y".repeat(MAX_QUOTED_CHARS);
        assert_eq!(quote(&s), format!("\"{s}\""));
    }

    #[test]
    fn describe_char_escapes_invisible() {
        assert_eq!(describe_char('&'), "'&'");
        assert_eq!(describe_char('\u{202e}'), "U+202E");
        assert_eq!(describe_char(' '), "U+0020");
    }
}
