//! Which characters may stand in text that people read (names, subjects, log lines, errors),
//! decided once here for every module: control characters, the bidirectional controls that
//! reorder what is shown (U+202E makes `exe.txt` read `txt.exe`), and the line and paragraph
//! separators (U+2028, U+2029) that start a new line in many viewers. Refused where a client
//! sends text, replaced where a provider does, escaped in log lines. A leaf: it imports
//! nothing of the crate, so `auth` may use it too.

use std::fmt::Write as _;

/// Whether `c` must not reach stored or logged text as it is: a control character (C0, DEL,
/// C1), a bidirectional control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
/// U+2069) or a line or paragraph separator (U+2028, U+2029).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Bytes as lowercase hexadecimal (digests, MACs, ids made of them).
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Hexadecimal (either case) back to bytes; `None` when it is not whole bytes of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `text` holds a character of [`is_unsafe_char`].
pub fn has_unsafe_char(text: &str) -> bool {
    text.chars().any(is_unsafe_char)
}

/// What a violation says about such text (never the text).
pub const UNSAFE_DESCRIPTION: &str =
    "must not contain control, bidirectional or line separator characters";

/// `text` with every character of [`is_unsafe_char`] replaced by a space.
pub fn neutralised(text: &str) -> String {
    text.chars()
        .map(|c| if is_unsafe_char(c) { ' ' } else { c })
        .collect()
}

/// At most `max` bytes of `text` (and a note), fit for a log line in either format: printable
/// ASCII as it is; control characters, escape sequences, backslashes and non-ASCII escaped as
/// Rust writes them (`\n`, `\u{1b}`, `\u{202e}`); a longer text is cut and says how long it
/// was.
pub fn loggable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let before = out.len();
        if (c.is_ascii_graphic() && c != '\\') || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
        if out.len() > max {
            out.truncate(before);
            let _ = write!(out, "...({} bytes)", text.len());
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_a_byte_and_back() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
        assert_eq!(unhex("000fABff"), Some(vec![0x00, 0x0f, 0xab, 0xff]));
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["0", "0g", "+1", "é0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    #[test]
    fn bidirectional_controls_and_line_separators_are_unsafe_and_ordinary_text_is_not() {
        for c in [
            '\0', '\n', '\u{7f}', '\u{85}', '\u{61c}', '\u{200e}', '\u{200f}', '\u{2028}',
            '\u{2029}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
        ] {
            assert!(is_unsafe_char(c), "{c:?}");
        }
        for c in [
            'a', ' ', 'é', '日', '\u{200d}', '\u{2030}', '\u{2065}', '\u{206a}',
        ] {
            assert!(!is_unsafe_char(c), "{c:?}");
        }
        assert!(has_unsafe_char("Acme\u{202e}gnp.exe"));
        assert_eq!(neutralised("a\u{2028}b\u{202e}c\n"), "a b c ");
    }

    #[test]
    fn a_log_line_gets_printable_ascii_only_and_at_most_its_bytes() {
        assert_eq!(
            loggable("x\u{202e}\u{2028}\n", 100),
            "x\\u{202e}\\u{2028}\\n"
        );
        let cut = loggable(&"é".repeat(100), 20);
        assert!(cut.len() <= 20 + 20, "{cut}");
        assert!(cut.ends_with("...(200 bytes)"), "{cut}");
    }
}
