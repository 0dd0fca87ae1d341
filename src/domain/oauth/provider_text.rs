//! What a provider says, made fit to show: the one place provider text is handled, for the
//! authorization (the token exchange and the browser's redirect) and the refresher alike.
//!
//! A provider's text is untrusted and may repeat what the service sent it: a provider whose
//! error echoes its inputs would put the client secret, the code, the verifier or the refresh
//! token into an error. So:
//!
//! - errors people see (an authorization's `error`, `last_refresh_error`, event reasons) hold
//!   the service's own words and the provider's OAuth `error` code only, checked by
//!   [`error_code`]: RFC 6749's characters, at most [`MAX_ERROR_CODE`] bytes, and none of
//!   the values sent;
//! - free text (`error_description`, a problem's `detail`) is never stored or answered: it
//!   goes to the debug log only, through [`log_description`]: scrubbed of every value sent,
//!   cut and escaped.

use crate::text::loggable;

/// Longest OAuth error code shown, in bytes.
pub const MAX_ERROR_CODE: usize = 64;
/// Longest provider description written to the debug log, in bytes.
const MAX_LOGGED_DESCRIPTION: usize = 300;
/// Shortest value searched for: shorter ones would match ordinary words (no code, verifier,
/// token or client secret is that short).
const MIN_SCRUBBED_BYTES: usize = 4;
/// What stands for a sent value in scrubbed text.
const HIDDEN: &str = "[hidden]";

/// The secret values the service sent in one call (and the forms they travelled in), looked
/// for in whatever the provider answers.
#[derive(Default)]
pub struct Sent {
    values: Vec<String>,
}

impl Sent {
    /// Adds `value` as sent, and its form-encoded spelling (how it travelled in a body).
    pub fn with(mut self, value: &str) -> Sent {
        if value.len() >= MIN_SCRUBBED_BYTES {
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            if encoded != value {
                self.values.push(encoded);
            }
            self.values.push(value.to_owned());
            // Longest first, so a value holding another is hidden whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
        self
    }

    /// `text` with every sent value replaced by `[hidden]`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), HIDDEN);
            }
        }
        text
    }

    fn repeated_in(&self, text: &str) -> bool {
        self.values.iter().any(|v| text.contains(v.as_str()))
    }
}

/// A provider's OAuth `error` code as people may see it: 1 to [`MAX_ERROR_CODE`] bytes of
/// RFC 6749's `error` characters (printable ASCII and space, without `"` and `\`), holding
/// none of the values sent; anything else is replaced by the service's own words.
pub fn error_code(code: &str, sent: &Sent) -> String {
    let valid = !code.is_empty()
        && code.len() <= MAX_ERROR_CODE
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if !valid {
        return "an error code that is not valid OAuth".to_owned();
    }
    if sent.repeated_in(code) {
        return "an error code repeating a value the service sent".to_owned();
    }
    code.to_owned()
}

/// Writes a provider's free text (`what`: where it came from) to the debug log, scrubbed of
/// the values sent, cut and escaped. It goes nowhere else.
pub fn log_description(what: &str, text: &str, sent: &Sent) {
    if text.is_empty() {
        return;
    }
    let said = loggable(&sent.scrub(text), MAX_LOGGED_DESCRIPTION);
    tracing::debug!(what, said = %said, "the provider's own words (scrubbed)");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hub-client-s3cret+/=";

    #[test]
    fn sent_values_and_their_encodings_are_hidden() {
        let sent = Sent::default()
            .with(SECRET)
            .with("the-code-123")
            .with("abc");
        let echo = "client_secret=hub-client-s3cret%2B%2F%3D&code=the-code-123 raw hub-client-s3cret+/= abc";
        let scrubbed = sent.scrub(echo);
        assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        assert!(!scrubbed.contains("the-code-123"), "{scrubbed}");
        assert_eq!(
            scrubbed, "client_secret=[hidden]&code=[hidden] raw [hidden] abc",
            "a 3-byte value is not searched for"
        );
    }

    #[test]
    fn an_error_code_is_shown_only_when_valid_bounded_and_no_echo() {
        let sent = Sent::default().with(SECRET).with("refresh-token-value");
        assert_eq!(error_code("invalid_grant", &sent), "invalid_grant");
        assert_eq!(error_code("invalid request", &sent), "invalid request");
        for bad in [
            "",
            "quote\"d",
            "back\\slash",
            "line\nbreak",
            "bidi\u{202e}",
            "é",
            &"x".repeat(MAX_ERROR_CODE + 1),
        ] {
            assert_eq!(
                error_code(bad, &sent),
                "an error code that is not valid OAuth",
                "{bad:?}"
            );
        }
        assert_eq!(
            error_code("bad:refresh-token-value", &sent),
            "an error code repeating a value the service sent"
        );
    }
}
