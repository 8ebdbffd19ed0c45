//! The one redaction of the workspace: [`Secret`] for keys, passwords and tokens, and
//! [`SensitiveUrl`] for URLs that may carry credentials (user info, an API key in the path, a
//! token in the query). Their `Debug`, `Display` and `Serialize` never show the secret part;
//! `expose()` gives it to the one place that uses it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
pub use url::Url;

/// What a redacted value prints as.
const REDACTED: &str = "<redacted>";

/// A string that must never be printed: private keys, passwords, bearer tokens.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What `Debug`, `Display` and `Serialize` show: empty when unset, else `<redacted>`.
    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { REDACTED }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// Why a URL was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The text is not a URL (the message never repeats the text, which may hold a secret).
    #[error("not a valid URL: {0}")]
    Parse(#[from] url::ParseError),
    /// The URL has no host (`mailto:`, `data:`…); only URLs to a server are used.
    #[error("a {0}: URL has no host; use an http:// or https:// URL")]
    NoHost(String),
}

/// A URL that may carry credentials. Shown (`Debug`, `Display`, `Serialize`) as
/// `scheme://host[:port]`, followed by `/…` when anything was left out (user info, path, query,
/// fragment); [`Self::expose`] gives the whole URL to the client that calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct SensitiveUrl {
    full: Url,
    shown: String,
}

impl SensitiveUrl {
    /// Parses `text` (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        Self::new(Url::parse(text.trim())?)
    }

    /// Wraps an already parsed URL.
    pub fn new(full: Url) -> Result<Self, UrlError> {
        let Some(host) = full.host_str() else {
            return Err(UrlError::NoHost(full.scheme().to_string()));
        };
        let cut = full.path() != "/"
            || full.query().is_some()
            || full.fragment().is_some()
            || !full.username().is_empty()
            || full.password().is_some();
        let port = full.port().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = format!("{}://{host}{port}{}", full.scheme(), if cut { "/…" } else { "" });
        Ok(Self { full, shown })
    }

    /// The whole URL, secrets included: only for the client that sends the request.
    pub fn expose(&self) -> &Url {
        &self.full
    }

    /// The redacted form (what `Display` shows).
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// This URL with `segment` appended to its path, before its query (which is kept):
    /// `http://h/api?token=x` joined with `service_output` is `http://h/api/service_output?token=x`.
    pub fn join(&self, segment: &str) -> Self {
        let mut full = self.full.clone();
        if let Ok(mut path) = full.path_segments_mut() {
            path.pop_if_empty().push(segment);
        }
        // Same scheme and host: still a URL with a host.
        Self::new(full).unwrap_or_else(|_| self.clone())
    }

    /// `text` with every form of this URL in it (whole, and without its user info, as HTTP
    /// clients print it) replaced by the redacted form.
    pub fn scrub(&self, text: &str) -> String {
        let mut bare = self.full.clone();
        // These fail only for URLs that cannot have user info, which then print without it anyway.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        text.replace(self.full.as_str(), &self.shown)
            .replace(bare.as_str(), &self.shown)
    }
}

impl fmt::Display for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SensitiveUrl({})", self.shown)
    }
}

impl Serialize for SensitiveUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

impl<'de> Deserialize<'de> for SensitiveUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for SensitiveUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let key = Secret::new("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
        for shown in [
            format!("{key:?}"),
            key.to_string(),
            serde_json::to_string(&key).unwrap(),
        ] {
            assert!(!shown.contains("ac0974"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert!(key.expose().starts_with("0xac09"));
    }

    #[test]
    fn urls_are_shown_as_scheme_host_and_port() {
        let cases = [
            ("https://mainnet.example/v2/SECRETKEY", "https://mainnet.example/…"),
            ("http://user:pass@127.0.0.1:8545", "http://127.0.0.1:8545/…"),
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
            ("https://rpc.example:8443/?apikey=SECRET", "https://rpc.example:8443/…"),
            ("http://[::1]:3000/x#frag", "http://[::1]:3000/…"),
        ];
        for (raw, shown) in cases {
            let url = SensitiveUrl::parse(raw).unwrap();
            assert_eq!(url.to_string(), shown, "{raw}");
            assert_eq!(format!("{url:?}"), format!("SensitiveUrl({shown})"));
            assert_eq!(serde_json::to_value(&url).unwrap(), shown);
            assert_eq!(url.expose().as_str().trim_end_matches('/'), raw.trim_end_matches('/'));
        }
    }

    #[test]
    fn join_puts_the_segment_before_the_query() {
        let base = SensitiveUrl::parse("http://u:p@svc:3000/api?token=x").unwrap();
        assert_eq!(
            base.join("service_output").expose().as_str(),
            "http://u:p@svc:3000/api/service_output?token=x"
        );
        let root = SensitiveUrl::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            root.join("service_output").expose().as_str(),
            "http://127.0.0.1:3000/service_output"
        );
        let slash = SensitiveUrl::parse("https://svc.example/api/").unwrap();
        assert_eq!(
            slash.join("service_output").expose().as_str(),
            "https://svc.example/api/service_output"
        );
    }

    #[test]
    fn errors_and_scrubbed_text_never_repeat_the_secret() {
        let e = SensitiveUrl::parse("http://user:SECRET@host:port").unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(SensitiveUrl::parse("mailto:a@b").is_err());
        let url = SensitiveUrl::parse("https://user:pw@rpc.example:8443/v2/SECRET?k=1").unwrap();
        for shown in [url.expose().as_str(), "https://rpc.example:8443/v2/SECRET?k=1"] {
            let message = format!("error sending request for url ({shown})");
            assert_eq!(
                url.scrub(&message),
                "error sending request for url (https://rpc.example:8443/…)"
            );
        }
    }
}
