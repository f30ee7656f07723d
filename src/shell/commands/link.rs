//! Links to shared contents (`link`, `get <link>`), shaped like magnet and ed2k links:
//! `napster:?xt=urn:sha256:<64 hex>&dn=<name>&xl=<bytes>`. The hash says what to fetch
//! (from every peer sharing those bytes); the name is what to save it as; the size is
//! checked against what the index says.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};

/// How every link starts.
pub const SCHEME: &str = "napster:?";

/// Characters of a name written as they are in a link; the rest are %-escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Full SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// The name to save it as.
    pub name: String,
    /// Its size in bytes, when the link says.
    pub size: Option<u64>,
}

impl Link {
    /// The link's text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{SCHEME}xt=urn:sha256:{}&dn={}",
            self.sha256,
            utf8_percent_encode(&self.name, ESCAPED)
        );
        if let Some(size) = self.size {
            text.push_str(&format!("&xl={size}"));
        }
        text
    }
}

/// Whether `text` is meant as a link (then [`parse`] says what is wrong with it).
pub fn is_link(text: &str) -> bool {
    text.to_lowercase().starts_with("napster:")
}

/// Read a link; the error says what is wrong and what one looks like.
pub fn parse(text: &str) -> Result<Link> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{why} in the link {:?}; a link looks like \
             napster:?xt=urn:sha256:<64 hex digits>&dn=<name>&xl=<bytes> (`link <file>` prints one)",
            crate::protocol::truncate(text)
        ))
    };
    let Some(query) = text
        .get(..SCHEME.len())
        .filter(|s| s.eq_ignore_ascii_case(SCHEME))
        .map(|_| &text[SCHEME.len()..])
    else {
        return Err(bad("no `napster:?` at the start"));
    };
    let (mut sha256, mut name, mut size) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "xt" => {
                let hex = value
                    .strip_prefix("urn:sha256:")
                    .ok_or_else(|| bad("xt is not urn:sha256:<hex>"))?
                    .to_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("the sha256 is not 64 hex digits"));
                }
                sha256 = Some(hex);
            }
            "dn" => {
                let decoded = percent_decode_str(&value.replace('+', " "))
                    .decode_utf8()
                    .map_err(|_| bad("the name is not UTF-8"))?
                    .into_owned();
                // A name from a link obeys the rule of a name from an index: no bidi
                // override may disguise what is saved (`invoice\u{202e}fdp.exe`).
                if !decoded.is_empty()
                    && let Some(problem) = crate::protocol::name_problem(&decoded)
                {
                    return Err(bad(&format!(
                        "the name (dn) \"{}\" {problem}",
                        crate::protocol::visible(&crate::protocol::truncate(&decoded))
                    )));
                }
                name = Some(decoded);
            }
            "xl" => {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("xl is not a size in bytes"))?,
                );
            }
            // Other parameters (trackers and the like) mean nothing here.
            _ => {}
        }
    }
    let sha256 = sha256.ok_or_else(|| bad("no xt=urn:sha256:…"))?;
    let name = name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| sha256[..16].to_owned());
    Ok(Link { sha256, name, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_bad_ones_say_why() {
        let link = Link {
            sha256: "0ac7".repeat(16),
            name: "live/my song & more.ogg".into(),
            size: Some(1234),
        };
        let text = link.text();
        assert_eq!(
            text,
            format!(
                "napster:?xt=urn:sha256:{}&dn=live%2Fmy%20song%20%26%20more.ogg&xl=1234",
                "0ac7".repeat(16)
            )
        );
        assert_eq!(parse(&text).unwrap(), link);
        let short = parse("napster:?xt=urn:sha256:123").unwrap_err().to_string();
        assert!(short.contains("not 64 hex digits"), "{short}");
        let none = parse("napster:?dn=x").unwrap_err().to_string();
        assert!(none.contains("no xt="), "{none}");
        assert!(parse("magnet:?xt=urn:btih:00").is_err());
        // The name obeys the index's name rule, and the error shows it escaped.
        for (dn, why) in [
            ("invoice%E2%80%AEfdp.exe", "bidi"),
            ("a%1B%5B31mred", "control"),
            ("..%2Fup.txt", "component"),
            ("%2Fetc%2Fpasswd", "absolute"),
            ("a%5Cb", "backslash"),
        ] {
            let text = format!("napster:?xt=urn:sha256:{}&dn={dn}", "ab".repeat(32));
            let refused = parse(&text).unwrap_err().to_string();
            assert!(refused.contains(why), "{dn}: {refused}");
            assert!(
                !refused.contains(['\u{202e}', '\u{1b}']),
                "{dn}: printed raw: {refused}"
            );
        }
        let nameless = parse(&format!("NAPSTER:?xt=urn:sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(
            (nameless.name.as_str(), nameless.size),
            ("abababababababab", None)
        );
    }
}
