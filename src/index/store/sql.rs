//! Text the PostgreSQL store builds: `LIKE` patterns, hash ranges, and database URLs
//! fit for messages (passwords hidden).

/// `url` with any password replaced, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `LIKE` pattern of a literal substring.
pub fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `LIKE` pattern of a `*`/`?` wildcard pattern.
pub fn like_wildcard(pattern: &str) -> String {
    like_escape(pattern).replace('*', "%").replace('?', "_")
}

/// Inclusive bounds of the hashes starting with a hex prefix.
pub fn hash_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let pad = |c: char| {
        let mut hex: String = prefix.to_owned();
        while hex.len() < 64 {
            hex.push(c);
        }
        hex::decode(hex).unwrap_or_default()
    };
    (pad('0'), pad('f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_ranges() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_wildcard("a*b?.mp3"), "a%b_.mp3");
        let (low, high) = hash_range("ab");
        assert_eq!(low[0], 0xab);
        assert_eq!(high[0], 0xab);
        assert_eq!(low[1], 0x00);
        assert_eq!(high[31], 0xff);
        assert_eq!(
            redacted("postgres://me:secret@db/napster"),
            "postgres://me:***@db/napster"
        );
    }
}
