//! The one redactor for every URL or connection string the project prints, logs or puts in an error (store URLs,
//! proxy URLs, gateway URLs: [`url()`]), and the one sanitiser for text a token endpoint or gateway sends that ends
//! up in an error or a log line ([`gateway_text`]).
//!
//! It does not lean on a URL parser, because the URLs it must hide secrets in are the ones a parser gets wrong: a
//! password with `#`, `@`, `?`, `/` or `%` written as it is (`postgres://app:p@ss#word@db/pay`) makes a parser end
//! the authority early and print the rest of the password as a host or a fragment. It errs on the side of hiding.

/// Query and connection-string parameters whose values are secrets (compared without case): libpq's `password`
/// and `sslpassword`, MySQL's `pass`, and the usual token names.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("pass")
        || name.contains("secret")
        || matches!(
            name.as_str(),
            "token" | "access_token" | "api_key" | "apikey" | "auth"
        )
}

const MASK: &str = "****";

/// `text` with every secret it may hold replaced by `****`: the password of a URL's user part (the user name is
/// kept, so an operator can tell which account is meant), the values of `password=`, `sslpassword=`, `pass=`
/// (and other secret-named) query parameters, and the same parameters in a libpq `key=value` connection string.
/// Anything else is returned as it is.
///
/// ```
/// use paynet_auth::redact::url;
///
/// assert_eq!(url("postgres://app:hunter2@db:5432/pay"), "postgres://app:****@db:5432/pay");
/// // A password written with the characters that end a URL's parts early is hidden whole.
/// assert_eq!(url("postgres://app:p@ss#w/rd?x%@db/pay"), "postgres://app:****@db/pay");
/// assert_eq!(
///     url("postgres://db/pay?user=app&password=hunter2&sslmode=require"),
///     "postgres://db/pay?user=app&password=****&sslmode=require",
/// );
/// assert_eq!(url("http://proxy-user:pw@proxy.internal:3128"), "http://proxy-user:****@proxy.internal:3128");
/// assert_eq!(url("host=db user=app password=hunter2"), "host=db user=app password=****");
/// assert_eq!(url("sqlite:///var/lib/paynet/token.db"), "sqlite:///var/lib/paynet/token.db");
/// ```
pub fn url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return without_scheme(text);
    };
    let (scheme, rest) = (&text[..scheme_end], &text[scheme_end + 3..]);
    let (authority, tail) = split_authority(rest);
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    out.push_str("://");
    match authority.rsplit_once('@') {
        // The user/password separator is the first `:` (a user name has none, a password may).
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query(tail));
    out
}

/// Splits what follows `scheme://` into the authority and the rest. The authority ends at the last `@` whose
/// following text up to the next `/`, `?`, `#` or the end looks like a host and port; without such an `@`, at the
/// first `/`, `?` or `#`.
fn split_authority(rest: &str) -> (&str, &str) {
    let host_end = |from: usize| {
        rest[from..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| from + i)
    };
    let looks_like_host = |host: &str| {
        !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%')
            })
    };
    // A user name holds none of `/`, `?`, `#`: an `@` after one of them (a query value `user=app@tenant`) does
    // not end a user part.
    let user_part_plausible = |userinfo: &str| {
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        !user.contains(['/', '?', '#'])
    };
    let mut at = rest.len();
    while let Some(i) = rest[..at].rfind('@') {
        let end = host_end(i + 1);
        if looks_like_host(&rest[i + 1..end]) && user_part_plausible(&rest[..i]) {
            return rest.split_at(end);
        }
        at = i;
    }
    rest.split_at(host_end(0))
}

/// The path, query and fragment with secret-named query values masked. A secret value runs to the next
/// `&name=` or the end, so that a password holding `&`, `#` or `?` is hidden whole.
fn redact_query(tail: &str) -> String {
    let Some(query_start) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(query_start + 1);
    let mut out = String::with_capacity(tail.len());
    out.push_str(path);
    let mut rest = query;
    let mut first = true;
    while !rest.is_empty() {
        if !first {
            out.push('&');
        }
        first = false;
        let name_end = rest.find(['=', '&']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if rest[name_end..].starts_with('=') && is_secret_name(name) {
            out.push_str(name);
            out.push('=');
            out.push_str(MASK);
            let value = &rest[name_end + 1..];
            rest = next_parameter(value).map_or("", |next| &value[next + 1..]);
        } else {
            let end = rest.find('&').unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            rest = rest.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// Where the next `&name=` starts in a secret value (the index of its `&`), if anywhere.
fn next_parameter(value: &str) -> Option<usize> {
    value.match_indices('&').map(|(i, _)| i).find(|&i| {
        let after = &value[i + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        name_len > 0 && after[name_len..].starts_with('=')
    })
}

/// Text without `scheme://`: an authority as curl takes a proxy (`user:password@proxy:3128`, the password masked
/// from the first `:` to the last `@`), or a libpq `key=value` string.
fn without_scheme(text: &str) -> String {
    if let Some((userinfo, host)) = text.rsplit_once('@')
        && !userinfo.contains(['=', ' '])
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{user}:{MASK}@{host}");
    }
    redact_key_values(text)
}

/// A libpq-style `key=value key='quoted value'` string with secret-named values masked.
fn redact_key_values(text: &str) -> String {
    if !text.contains('=') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        // Past the whitespace character, whatever its length in bytes (a no-break space is two).
        let name_start = rest[..eq]
            .char_indices()
            .rfind(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = rest[name_start..eq].trim();
        out.push_str(&rest[..=eq]);
        let value = &rest[eq + 1..];
        let value_end = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |i| i + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        if is_secret_name(name) {
            out.push_str(MASK);
        } else {
            out.push_str(&value[..value_end]);
        }
        rest = &value[value_end..];
    }
    out.push_str(rest);
    out
}

/// The longest piece of a server's text [`gateway_text`] keeps, in characters (then `…` marks the cut).
pub const MAX_GATEWAY_TEXT: usize = 200;

/// Text a server sent (a login refusal's message, an OAuth `error_description`, a JSON-RPC error's message, a
/// parser's complaint that quotes the answer) made fit for an error message or a log line:
///
/// - every non-empty `secrets` entry (the password or client secret, a token) is replaced by `****`, also where
///   the server split it with control characters;
/// - control characters (C0 such as ESC, BEL, NUL; DEL; C1) are removed, line breaks and tabs become spaces, so a
///   terminal shows no escape sequence and a log line stays one line; printable Unicode is kept;
/// - the length is bounded to [`MAX_GATEWAY_TEXT`] characters, with `…` where it was cut.
///
/// User names and client ids are not passed as secrets by the presets: they name the account in credential keys,
/// `token status` and logs already.
///
/// ```
/// use paynet_auth::redact::gateway_text;
///
/// let echoed = "wrong password \"hunter2\"\x1b[2J\x07\r\nretry";
/// assert_eq!(gateway_text(echoed, &["hunter2"]), "wrong password \"****\"[2J  retry");
/// assert_eq!(gateway_text(&"x".repeat(5000), &[]).chars().count(), 201);
/// ```
pub fn gateway_text(text: &str, secrets: &[&str]) -> String {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    let mask = |text: &str| {
        secrets
            .iter()
            .fold(text.to_owned(), |text, secret| text.replace(secret, MASK))
    };
    let cleaned: String = mask(text)
        .chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' | '\u{b}' | '\u{c}' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    // Removing control characters may have joined the pieces of a secret the server split with them.
    let cleaned = mask(&cleaned);
    let mut chars = cleaned.char_indices();
    match chars.nth(MAX_GATEWAY_TEXT) {
        None => cleaned,
        Some((cut, _)) => {
            let mut bounded = cleaned[..cut].to_owned();
            bounded.push('…');
            bounded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_GATEWAY_TEXT, gateway_text, url};

    #[test]
    fn user_part_passwords_are_hidden_whole() {
        for password in [
            "hunter2",
            "p@ss#word",
            "a/b?c",
            "50%off",
            "p@ss#wordX",
            "::colons::",
            "a@b@c",
            "q?x=1&password=2",
        ] {
            for rest in [
                "db:5432/pay",
                "db/pay?sslmode=require",
                "db",
                "[::1]:5432/x",
            ] {
                let text = format!("postgres://app:{password}@{rest}");
                let shown = url(&text);
                assert_eq!(shown, format!("postgres://app:****@{rest}"), "{text}");
            }
        }
    }

    #[test]
    fn secret_query_values_are_hidden_whole() {
        assert_eq!(
            url("postgres://db/x?user=a&password=hunter2&sslmode=disable"),
            "postgres://db/x?user=a&password=****&sslmode=disable"
        );
        assert_eq!(
            url("postgres://db/x?sslpassword=k3y&sslkey=/etc/k.pem"),
            "postgres://db/x?sslpassword=****&sslkey=/etc/k.pem"
        );
        assert_eq!(
            url("mysql://root@db/x?pass=s#e?c&r/e%t"),
            "mysql://root@db/x?pass=****"
        );
        assert_eq!(
            url("postgres://db/x?password=a&b#c&sslmode=require"),
            "postgres://db/x?password=****&sslmode=require"
        );
        assert_eq!(
            url("postgres://u:p@db/x?PASSWORD=two"),
            "postgres://u:****@db/x?PASSWORD=****"
        );
    }

    /// Every form of URL the project prints, with what it prints of it.
    #[test]
    fn every_url_form_is_redacted() {
        for (text, shown) in [
            // User part with a password, without one, and percent-encoded.
            (
                "postgres://app:hunter2@db:5432/pay",
                "postgres://app:****@db:5432/pay",
            ),
            (
                "mysql://root@127.0.0.1:3306/test",
                "mysql://root@127.0.0.1:3306/test",
            ),
            (
                "postgres://app:p%40ss%23w%25@db/pay",
                "postgres://app:****@db/pay",
            ),
            (
                "postgres://us%40er:pw@db/pay",
                "postgres://us%40er:****@db/pay",
            ),
            (
                "http://proxy-user:%2F%3F@proxy:3128",
                "http://proxy-user:****@proxy:3128",
            ),
            // Secret query parameters, whatever their case, among others that are kept.
            (
                "postgres://db/pay?password=hunter2",
                "postgres://db/pay?password=****",
            ),
            (
                "postgres://db/pay?sslmode=require&sslpassword=k3y",
                "postgres://db/pay?sslmode=require&sslpassword=****",
            ),
            (
                "https://gw.example/cb?token=abc&state=1",
                "https://gw.example/cb?token=****&state=1",
            ),
            (
                "https://gw.example/cb?access_token=abc",
                "https://gw.example/cb?access_token=****",
            ),
            (
                "https://gw.example/cb?API_KEY=abc#top",
                "https://gw.example/cb?API_KEY=****",
            ),
            (
                "https://gw.example/cb?client_secret=abc",
                "https://gw.example/cb?client_secret=****",
            ),
            // SQLite paths and the memory store hold no secret.
            ("sqlite://paynet-tokens.db", "sqlite://paynet-tokens.db"),
            (
                "sqlite:///var/lib/paynet/token.db",
                "sqlite:///var/lib/paynet/token.db",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite://:memory:", "sqlite://:memory:"),
            ("memory:", "memory:"),
            ("memory://", "memory://"),
            // IPv6 hosts, with and without a user part.
            (
                "postgres://app:pw@[::1]:5432/pay",
                "postgres://app:****@[::1]:5432/pay",
            ),
            ("http://[2001:db8::1]:3128", "http://[2001:db8::1]:3128"),
            (
                "postgres://[::1]/pay?password=x",
                "postgres://[::1]/pay?password=****",
            ),
            // Strings no URL parser reads: still no password shown.
            ("postgres://app:pw@", "postgres://app:****@"),
            ("http://", "http://"),
            ("not a url", "not a url"),
            ("user:pw@proxy:3128", "user:****@proxy:3128"),
            (
                "host=db user=app password='a b'",
                "host=db user=app password=****",
            ),
        ] {
            assert_eq!(url(text), shown, "{text}");
        }
    }

    #[test]
    fn what_holds_no_secret_is_kept() {
        for text in [
            "mysql://root@db/x",
            "sqlite::memory:",
            "sqlite:///tmp/a.db",
            "memory:",
            "https://gateway.example:8443/gw",
            "http://proxy.internal:3128",
            "postgres://db/x?user=a@b&sslmode=require",
            "",
        ] {
            assert_eq!(url(text), text);
        }
    }

    #[test]
    fn an_at_in_a_later_query_value_does_not_hide_a_password_before_it() {
        assert_eq!(
            url("postgres://db/pay?password=hunter2&user=app@tenant"),
            "postgres://db/pay?password=****&user=app@tenant"
        );
        assert_eq!(
            url("postgres://app@tenant:pw@db.postgres.azure.example/pay"),
            "postgres://app@tenant:****@db.postgres.azure.example/pay"
        );
        // Ambiguous (a raw password may hold `@host/path?query`): hidden too much rather than too little.
        let shown = url("postgres://app@tenant:pw@db.postgres.azure.example/pay?user=x@y");
        assert!(
            shown.starts_with("postgres://app@tenant:****@") && !shown.contains("pw"),
            "{shown}"
        );
    }

    #[test]
    fn authorities_without_a_scheme_are_redacted() {
        assert_eq!(url("user:hunter2@proxy:3128"), "user:****@proxy:3128");
        assert_eq!(
            url("agent:hunter2@gw.example/gw"),
            "agent:****@gw.example/gw"
        );
        assert_eq!(url("proxy.internal:3128"), "proxy.internal:3128");
    }

    #[test]
    fn multi_byte_whitespace_does_not_panic() {
        assert_eq!(url("sqlite:/tmp/a\u{a0}b=c"), "sqlite:/tmp/a\u{a0}b=c");
        assert_eq!(url("host=db\u{a0}password=x"), "host=db\u{a0}password=****");
    }

    #[test]
    fn connection_strings_are_redacted() {
        assert_eq!(
            url("host=db password='a b c' user=app"),
            "host=db password=**** user=app"
        );
        assert_eq!(url("host=db password=x"), "host=db password=****");
    }

    #[test]
    fn a_password_with_every_character_that_ends_a_url_part_is_hidden_whole() {
        for password in [
            "p#ss",
            "p@ss",
            "p?ss",
            "p/ss",
            "p%ss",
            "#@?/%",
            "a%40b#c@d?e/f%",
        ] {
            let text = format!("postgres://postgres:{password}@db:5432/pay?sslmode=require");
            assert_eq!(
                url(&text),
                "postgres://postgres:****@db:5432/pay?sslmode=require",
                "{text}"
            );
            let text = format!("postgres://db/pay?password={password}&sslmode=require");
            assert_eq!(
                url(&text),
                "postgres://db/pay?password=****&sslmode=require",
                "{text}"
            );
            let text = format!("host=db password='{password}' user=app");
            assert_eq!(url(&text), "host=db password=**** user=app", "{text}");
        }
    }

    #[test]
    fn gateway_text_masks_secrets_even_split_by_control_characters() {
        assert_eq!(
            gateway_text(
                "bad hunter2 and hun\x07ter2 and T-1",
                &["hunter2", "T-1", ""]
            ),
            "bad **** and **** and ****"
        );
    }

    #[test]
    fn gateway_text_keeps_printable_unicode_and_drops_every_control_character() {
        let text = "caf\u{e9} \u{2713}\u{1b}[31m\u{7}\u{0}\u{7f}\u{85}\u{9b}1m\ttab\r\nline";
        assert_eq!(
            gateway_text(text, &[]),
            "caf\u{e9} \u{2713}[31m1m tab  line"
        );
    }

    #[test]
    fn gateway_text_is_bounded_in_characters() {
        let short = "\u{e9}".repeat(MAX_GATEWAY_TEXT);
        assert_eq!(gateway_text(&short, &[]), short);
        let long = "\u{e9}".repeat(MAX_GATEWAY_TEXT + 1);
        let shown = gateway_text(&long, &[]);
        assert_eq!(shown.chars().count(), MAX_GATEWAY_TEXT + 1);
        assert!(shown.ends_with("\u{e9}…"), "{shown}");
    }
}
