//! Containers for secret values: redacted when printed, wiped on drop.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::CryptoError;

const REDACTED: &str = "[REDACTED]";

/// A secret text. Prints as `[REDACTED]`; its buffer is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Secret bytes. Prints as `[REDACTED]`; its buffer is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(value: Vec<u8>) -> Self {
        Self(value)
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A credential map (field name to secret value). Debug shows the field names
/// only; every value (and key) is wiped on drop.
#[derive(Clone, Default)]
pub struct Credentials(BTreeMap<String, String>);

impl Credentials {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// Field names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The whole map in plaintext; keep the borrow short and never log it.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Hands the plaintext map to the caller, who becomes responsible for it.
    pub fn into_map(mut self) -> BTreeMap<String, String> {
        // Take the map out so that our Drop (which still runs) wipes an empty
        // map instead of the values we just handed out.
        std::mem::take(&mut self.0)
    }

    /// The canonical JSON encoding: a compact object, keys sorted, escaped
    /// exactly as `serde_json::to_vec` does.
    ///
    /// Written by hand rather than through serde_json for two reasons: the
    /// exact length is computed first, so the buffer never reallocates (a
    /// reallocation would leave an unwiped copy of the secrets on the heap),
    /// and the encoding cannot fail, so no error path is needed. A property
    /// test checks byte equality with serde_json.
    pub fn to_plaintext(&self) -> SecretBytes {
        let len = 2 // braces
            + self.0.len().saturating_sub(1) // commas
            + self
                .0
                .iter()
                .map(|(k, v)| json_string_len(k) + 1 + json_string_len(v))
                .sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(b'{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(&mut out, key);
            out.push(b':');
            push_json_string(&mut out, value);
        }
        out.push(b'}');
        debug_assert_eq!(out.len(), len, "JSON length precomputation is off");
        SecretBytes::new(out)
    }

    /// Parses the JSON object produced by [`Credentials::to_plaintext`] (any
    /// JSON object of strings is accepted).
    pub fn from_plaintext(plaintext: &SecretBytes) -> Result<Credentials, CryptoError> {
        // The serde_json error is dropped: its message may quote the input.
        serde_json::from_slice::<BTreeMap<String, String>>(plaintext.expose())
            .map(Credentials)
            .map_err(|_| CryptoError::Malformed)
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        for (mut key, mut value) in std::mem::take(&mut self.0) {
            key.zeroize();
            value.zeroize();
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
        struct Fields<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.keys().map(|k| (k, Redacted)))
                    .finish()
            }
        }
        f.debug_tuple("Credentials")
            .field(&Fields(&self.0))
            .finish()
    }
}

/// Encoded length of `s` as a JSON string, quotes included.
fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Appends `s` as a JSON string, escaping as serde_json does: the short forms
/// where JSON has them, `\u00XX` (lowercase hex) for other control bytes, all
/// else verbatim. Working byte-wise is sound: UTF-8 continuation and lead
/// bytes are all >= 0x80 and pass through untouched.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in s.bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CANARY: &str = "canary-hunter2-s3cr3t";

    fn sample() -> Credentials {
        Credentials::new(BTreeMap::from([
            ("api_key".to_owned(), CANARY.to_owned()),
            ("client_id".to_owned(), format!("{CANARY}-id")),
        ]))
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = SecretString::new(CANARY.to_owned());
        let b = SecretBytes::new(CANARY.as_bytes().to_vec());
        for printed in [
            format!("{s:?}"),
            format!("{s}"),
            format!("{s:#?}"),
            format!("{b:?}"),
            format!("{b}"),
            format!("{b:#?}"),
        ] {
            assert_eq!(printed, REDACTED);
        }
        assert_eq!(s.expose(), CANARY);
        assert_eq!(b.expose(), CANARY.as_bytes());
        assert_eq!(s.clone().expose(), CANARY);
        assert_eq!(b.clone().expose(), CANARY.as_bytes());
    }

    #[test]
    fn credentials_debug_shows_keys_only() {
        let creds = sample();
        for printed in [format!("{creds:?}"), format!("{creds:#?}")] {
            assert!(!printed.contains(CANARY), "{printed}");
            assert!(printed.contains("api_key"));
            assert!(printed.contains("client_id"));
            assert!(printed.contains(REDACTED));
        }
        assert_eq!(
            format!("{creds:?}"),
            r#"Credentials({"api_key": [REDACTED], "client_id": [REDACTED]})"#
        );
    }

    #[test]
    fn credentials_accessors() {
        let creds = sample();
        assert_eq!(creds.len(), 2);
        assert!(!creds.is_empty());
        assert!(Credentials::default().is_empty());
        assert_eq!(creds.keys().collect::<Vec<_>>(), ["api_key", "client_id"]);
        assert_eq!(creds.get("api_key"), Some(CANARY));
        assert_eq!(creds.get("missing"), None);
        assert_eq!(creds.expose().len(), 2);
        let map = creds.clone().into_map();
        assert_eq!(&map, creds.expose());
    }

    #[test]
    fn plaintext_is_canonical_json() {
        let creds = Credentials::new(BTreeMap::from([
            ("b".to_owned(), "x\"y\\z\n\u{1}é".to_owned()),
            ("a".to_owned(), String::new()),
        ]));
        let plain = creds.to_plaintext();
        assert_eq!(
            plain.expose(),
            r#"{"a":"","b":"x\"y\\z\n\u0001é"}"#.as_bytes()
        );
        assert_eq!(Credentials::default().to_plaintext().expose(), b"{}");
        let back = Credentials::from_plaintext(&plain).unwrap();
        assert_eq!(back.expose(), creds.expose());
    }

    #[test]
    fn from_plaintext_rejects_non_maps() {
        for bad in [
            &b""[..],
            b"[]",
            b"{\"a\":1}",
            b"{\"a\":null}",
            b"\"s\"",
            b"{",
            b"\xff",
        ] {
            assert!(matches!(
                Credentials::from_plaintext(&SecretBytes::new(bad.to_vec())),
                Err(CryptoError::Malformed)
            ));
        }
    }

    proptest! {
        #[test]
        fn plaintext_matches_serde_json(
            map in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..8)
        ) {
            let creds = Credentials::new(map.clone());
            let plain = creds.to_plaintext();
            let expected = serde_json::to_vec(&map).unwrap();
            prop_assert_eq!(plain.expose(), expected.as_slice());
            // Exact pre-sizing: no reallocation left a stray copy behind.
            prop_assert_eq!(plain.expose().len(), plain.0.capacity());
            let back = Credentials::from_plaintext(&plain).unwrap();
            prop_assert_eq!(back.expose(), &map);
        }
    }
}
