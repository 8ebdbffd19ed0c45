//! Node addresses as operators write them: `host:port`, a bare host (port 4000), or a full
//! `http(s)://host[:port]` URL. The key (`host:port`, no scheme) is what clients get back, as
//! from Ritual's router; the base URL keeps the scheme for probing.

use std::fmt;

/// Port of a node when none is given.
pub const DEFAULT_PORT: u16 = 4000;

/// Why an address was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing but blanks or a comment.
    #[error("empty address")]
    Empty,
    /// A scheme other than http or https.
    #[error("\"{line}\": scheme {scheme} is not http or https")]
    Scheme {
        /// The address as written.
        line: String,
        /// Its scheme.
        scheme: String,
    },
    /// `[` without `]`.
    #[error("\"{0}\": unclosed [ in IPv6 address")]
    UnclosedBracket(String),
    /// No host before the port.
    #[error("\"{0}\": no host")]
    NoHost(String),
    /// A port that is not 1 to 65535.
    #[error("\"{line}\": invalid port \"{port}\"")]
    Port {
        /// The address as written.
        line: String,
        /// The port as written.
        port: String,
    },
}

/// A normalised node address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// Host name or IP (IPv6 in brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl NodeAddr {
    /// Parses one address; `None` for blank lines and comments, `Err` for malformed ones.
    pub fn parse(line: &str) -> Option<Result<Self, AddressError>> {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            return None;
        }
        let (scheme, rest) = match line.split_once("://") {
            Some(("http", rest)) => ("http", rest),
            Some(("https", rest)) => ("https", rest),
            Some((other, _)) => {
                return Some(Err(AddressError::Scheme {
                    line: line.into(),
                    scheme: other.into(),
                }));
            }
            None => ("http", line),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Some(Err(AddressError::UnclosedBracket(line.into())));
            };
            (format!("[{host}]"), after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Some(Err(AddressError::NoHost(line.into())));
        }
        let default = if scheme == "https" && port.is_none() && line.contains("://") {
            443
        } else {
            DEFAULT_PORT
        };
        let port = match port {
            None => default,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Some(Err(AddressError::Port {
                        line: line.into(),
                        port: p.into(),
                    }));
                }
            },
        };
        Some(Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        }))
    }

    /// What clients get: `host:port`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `scheme://host:port`.
    pub fn base_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// Parses an `ips.txt`: one address per line, blank lines and `#` comments ignored, duplicates
/// dropped. Returns the addresses and one message per bad line.
pub fn parse_list(text: &str) -> (Vec<NodeAddr>, Vec<String>) {
    let mut out: Vec<NodeAddr> = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match NodeAddr::parse(line) {
            None => {}
            Some(Ok(addr)) if out.iter().any(|a| a.key() == addr.key()) => {}
            Some(Ok(addr)) => out.push(addr),
            Some(Err(e)) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NodeAddr {
        NodeAddr::parse(s).unwrap().unwrap()
    }

    #[test]
    fn every_form_operators_write_works() {
        assert_eq!(p("10.0.0.1:4000").base_url(), "http://10.0.0.1:4000");
        assert_eq!(p("10.0.0.1").key(), "10.0.0.1:4000");
        assert_eq!(p("https://my-node.example").base_url(), "https://my-node.example:443");
        assert_eq!(p("http://Node.Example:8080/").key(), "node.example:8080");
        assert_eq!(p("[::1]:4001").base_url(), "http://[::1]:4001");
        assert_eq!(p("  127.0.0.1:4000  # local").key(), "127.0.0.1:4000");
        assert!(NodeAddr::parse("   ").is_none());
        assert!(NodeAddr::parse("# comment").is_none());
        assert!(NodeAddr::parse("ftp://x").unwrap().is_err());
        assert!(NodeAddr::parse("host:port").unwrap().is_err());
    }

    #[test]
    fn list_drops_duplicates_and_reports_bad_lines() {
        let (addrs, errors) = parse_list("a:1\n\nhttp://a:1\nb\nc:x\n");
        assert_eq!(
            addrs.iter().map(NodeAddr::key).collect::<Vec<_>>(),
            vec!["a:1", "b:4000"]
        );
        assert_eq!(errors, vec!["line 5: \"c:x\": invalid port \"x\"".to_string()]);
    }
}
