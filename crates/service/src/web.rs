//! What the control interface needs on both servers: sign-in sessions (a cookie and a CSRF token,
//! bounded in number and lifetime, ended on the server at sign-out) and the web app's files,
//! built from `ui/` at the repository root and embedded in the binary (no CDN, no Node at build).
//!
//! A session is opened by the server after it checked a NIP-98 signed request; this module only
//! keeps it. Its token travels in an `HttpOnly; SameSite=Strict` cookie (`Secure` when the server
//! is reached over TLS), and every request that changes state must also carry the session's CSRF
//! token in the [`CSRF_HEADER`] header, which a page of another origin cannot read nor set.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderValue, Method, header};
use rand::RngCore;

/// The session cookie's name.
pub const COOKIE: &str = "infernet_session";
/// The header carrying the CSRF token on requests that change state.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Bounds of the session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions open at once; at the limit the oldest is ended for a new one.
    pub max: usize,
    /// Sessions of one signer at once; at the limit their oldest is ended for a new one.
    pub per_signer: usize,
    /// How long a session lasts from sign-in.
    pub lifetime: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max: 1000,
            per_signer: 16,
            lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// An open session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who signed in (`npub1…`).
    pub signer: String,
    /// The token requests that change state carry in [`CSRF_HEADER`].
    pub csrf: String,
    /// When it was opened.
    pub opened: Instant,
    /// When it ends.
    pub expires: Instant,
}

/// Why a request is not part of a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No session cookie, or one the server does not know (ended, expired, never opened).
    #[error("sign in first: no session, or it ended")]
    NoSession,
    /// The request changes state without the session's CSRF token.
    #[error("missing or wrong x-csrf-token header; use the token given at sign-in")]
    Csrf,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// An empty table with `limits` (a `max` or `per_signer` of 0 counts as 1).
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits: SessionLimits {
                max: limits.max.max(1),
                per_signer: limits.per_signer.max(1),
                lifetime: limits.lifetime,
            },
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Opens a session for `signer`; answers its token (for the cookie) and the session.
    pub fn open(&self, signer: &str) -> (String, Session) {
        let now = Instant::now();
        let token = random_hex(32);
        let session = Session {
            signer: signer.to_string(),
            csrf: random_hex(32),
            opened: now,
            expires: now + self.limits.lifetime,
        };
        let mut table = self.table.lock().expect("sessions poisoned");
        table.retain(|_, s| s.expires > now);
        let oldest = |table: &HashMap<String, Session>, of: Option<&str>| {
            table
                .iter()
                .filter(|(_, s)| of.is_none_or(|o| s.signer == o))
                .min_by_key(|(_, s)| s.opened)
                .map(|(t, _)| t.clone())
        };
        if table.values().filter(|s| s.signer == signer).count() >= self.limits.per_signer
            && let Some(t) = oldest(&table, Some(signer))
        {
            table.remove(&t);
        }
        if table.len() >= self.limits.max
            && let Some(t) = oldest(&table, None)
        {
            table.remove(&t);
        }
        table.insert(token.clone(), session.clone());
        (token, session)
    }

    /// The session of a request, from its cookie; for a method that changes state (anything
    /// but GET and HEAD) the CSRF header must match too.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Session, SessionError> {
        let token = cookie(headers, COOKIE).ok_or(SessionError::NoSession)?;
        let now = Instant::now();
        let session = {
            let mut table = self.table.lock().expect("sessions poisoned");
            match table.get(token) {
                Some(s) if s.expires > now => s.clone(),
                Some(_) => {
                    table.remove(token);
                    return Err(SessionError::NoSession);
                }
                None => return Err(SessionError::NoSession),
            }
        };
        if !(method == Method::GET || method == Method::HEAD) {
            let given = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
            if !same(given, session.csrf.as_bytes()) {
                return Err(SessionError::Csrf);
            }
        }
        Ok(session)
    }

    /// Ends the request's session (CSRF checked); answers the session ended.
    pub fn close(&self, method: &Method, headers: &HeaderMap) -> Result<Session, SessionError> {
        let session = self.check(method, headers)?;
        if let Some(token) = cookie(headers, COOKIE) {
            self.table.lock().expect("sessions poisoned").remove(token);
        }
        Ok(session)
    }

    /// Sessions open now (expired ones not counted).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.table
            .lock()
            .expect("sessions poisoned")
            .values()
            .filter(|s| s.expires > now)
            .count()
    }

    /// No session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the thread's CSPRNG, as hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value of a new session under `path`.
pub fn session_cookie(token: &str, path: &str, secure: bool, lifetime: Duration) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        lifetime.as_secs()
    ))
    .expect("hex and ASCII make a valid header")
}

/// The `Set-Cookie` value that removes the session cookie under `path`.
pub fn clear_cookie(path: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("ASCII makes a valid header")
}

/// The `q` quantile (0 to 1) of a latency histogram in ms: `counts[i]` jobs took at most
/// `bounds[i]` seconds (and more than the bound before), the one count more those above every
/// bound. Interpolated within the bucket (as Prometheus' `histogram_quantile`); jobs above every
/// bound count at the last bound. None without jobs or with mismatched lengths.
pub fn latency_quantile(bounds: &[f64], counts: &[i64], q: f64) -> Option<f64> {
    let total: i64 = counts.iter().sum();
    let last = *bounds.last()?;
    if total <= 0 || counts.len() != bounds.len() + 1 {
        return None;
    }
    let target = q * total as f64;
    let mut below = 0.0;
    for (i, &n) in counts.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && below + n >= target {
            let Some(&upper) = bounds.get(i) else {
                return Some(last * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some((lower + (upper - lower) * (target - below) / n) * 1000.0);
        }
        below += n;
    }
    Some(last * 1000.0)
}

/// One embedded file of the web app.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its name under the app's `ui/` path.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../../ui/dist/", $name)),
        }
    };
}

/// The app's files (`ui/dist`, built by `ui/build.mjs`).
pub const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("forms.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("uplot.js", "text/javascript; charset=utf-8"),
    asset!("uplot.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("icon-192.png", "image/png"),
    asset!("icon-512.png", "image/png"),
];

/// The service worker's code; [`service_worker`] puts the app's paths in front of it.
const SW: &str = include_str!("../../../ui/dist/sw.js");

/// The asset called `name`.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A short hash of every asset: the version the service worker caches the shell under, and the
/// query that makes a new build's files new URLs.
pub fn version() -> String {
    // FNV-1a: stable across builds and platforms (the std hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for a in ASSETS {
        for b in a.bytes.iter().chain(SW.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// What the shell page says about the app it starts.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    /// Where the app lives, with a trailing slash: `/` (the router's fleet) or `/dashboard/`.
    pub base: &'a str,
    /// `fleet` (router) or `node` (a node's own dashboard).
    pub mode: &'a str,
    /// The page's title.
    pub title: &'a str,
    /// Where the session is opened (`POST`) and read (`GET`) and ended (`DELETE`).
    pub session: &'a str,
    /// Where the app's files are served, with a trailing slash.
    pub assets: &'a str,
    /// The service worker's URL.
    pub sw: &'a str,
    /// The manifest's URL.
    pub manifest: &'a str,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The application shell: the same for every visitor, holds no data (the script fetches it with
/// the session), so it can be cached and served offline.
pub fn shell(app: &App<'_>) -> String {
    let v = version();
    let a = escape(app.assets);
    let nav: &[(&str, &str)] = if app.mode == "fleet" {
        &[
            ("fleet", "Fleet"),
            ("jobs", "Jobs"),
            ("earnings", "Earnings"),
            ("settings", "Settings"),
            ("diagnostics", "Diagnostics"),
            ("alerts", "Alerts"),
        ]
    } else {
        &[
            ("node", "Node"),
            ("settings", "Settings"),
            ("diagnostics", "Diagnostics"),
            ("alerts", "Alerts"),
        ]
    };
    let links: String = nav
        .iter()
        .map(|(id, label)| format!("<li><a href=\"#/{id}\" data-page=\"{id}\">{label}</a></li>"))
        .collect();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="theme-color" content="#14532d">
<title>{title}</title>
<link rel="manifest" href="{manifest}">
<link rel="icon" href="{a}icon.svg" type="image/svg+xml">
<link rel="apple-touch-icon" href="{a}icon-192.png">
<link rel="stylesheet" href="{a}uplot.css?v={v}">
<link rel="stylesheet" href="{a}app.css?v={v}">
<script src="{a}uplot.js?v={v}" defer></script>
<script src="{a}forms.js?v={v}" defer></script>
<script src="{a}app.js?v={v}" defer></script>
</head>
<body data-base="{base}" data-mode="{mode}" data-session="{session}" data-sw="{sw}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <h1 class="brand"><a href="#/">{title}</a></h1>
  <div class="who" id="who" aria-live="polite"></div>
  <button type="button" id="signin" class="primary">Sign in</button>
  <button type="button" id="signout" hidden>Sign out</button>
</header>
<nav aria-label="Sections"><ul id="nav">{links}</ul></nav>
<section id="alerts" class="alerts" aria-label="Alerts" aria-live="polite"></section>
<main id="main" tabindex="-1">
  <noscript><p>This dashboard needs JavaScript.</p></noscript>
  <p id="status" class="status" role="status">Sign in with your Nostr extension (NIP-07) to see your {what}.</p>
  <div id="page"></div>
</main>
</body>
</html>
"##,
        title = escape(app.title),
        manifest = escape(app.manifest),
        base = escape(app.base),
        mode = escape(app.mode),
        session = escape(app.session),
        sw = escape(app.sw),
        what = if app.mode == "fleet" { "fleet" } else { "node" },
    )
}

/// The web manifest of the app.
pub fn manifest(app: &App<'_>) -> String {
    serde_json::json!({
        "name": app.title,
        "short_name": if app.mode == "fleet" { "Infernet" } else { "Infernet node" },
        "description": "Your Infernet nodes: status, load, jobs and settings",
        "start_url": app.base,
        "scope": app.base,
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#14532d",
        "icons": [
            {"src": format!("{}icon-192.png", app.assets), "sizes": "192x192", "type": "image/png", "purpose": "any"},
            {"src": format!("{}icon-512.png", app.assets), "sizes": "512x512", "type": "image/png", "purpose": "any"},
            {"src": format!("{}icon.svg", app.assets), "sizes": "any", "type": "image/svg+xml"},
        ],
    })
    .to_string()
}

/// The service worker: caches the shell and its files under this build's version; every other
/// request (the session, the data) goes to the network and is never cached.
pub fn service_worker(app: &App<'_>) -> String {
    let v = version();
    let shell: Vec<String> = std::iter::once(app.base.to_string())
        .chain(
            ["uplot.css", "app.css", "uplot.js", "forms.js", "app.js"]
                .iter()
                .map(|n| format!("{}{n}?v={v}", app.assets)),
        )
        .chain(
            ["icon.svg", "icon-192.png", "icon-512.png"]
                .iter()
                .map(|n| format!("{}{n}", app.assets)),
        )
        .collect();
    format!(
        "const VERSION = {};\nconst SHELL = {};\n{SW}",
        serde_json::json!(format!("infernet-{}-{v}", app.mode)),
        serde_json::json!(shell)
    )
}

/// The app's pages, with their security headers: nothing from elsewhere, no framing, no sniffing,
/// no referrer.
pub mod pages {
    use std::time::Instant;

    use axum::{
        Json,
        http::{HeaderMap, HeaderValue, Method, StatusCode, header},
        response::{IntoResponse, Response},
    };
    use serde_json::json;

    use super::{App, SessionError, Sessions, asset, clear_cookie, manifest, service_worker, session_cookie, shell};

    /// What a page may load: only this origin's files.
    const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
        connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

    /// `body` as `content_type`, cached as `cache` says, with the security headers.
    pub fn page(content_type: &'static str, body: impl Into<axum::body::Body>, cache: &'static str) -> Response {
        let mut r = Response::new(body.into());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        r
    }

    /// The app's shell (HTML).
    pub fn shell_page(app: &App<'_>) -> Response {
        page("text/html; charset=utf-8", shell(app), "no-cache")
    }

    /// The embedded file `name` (`None`: there is none).
    pub fn asset_page(name: &str) -> Option<Response> {
        asset(name).map(|a| page(a.content_type, a.bytes, "public, max-age=3600"))
    }

    /// The web manifest.
    pub fn manifest_page(app: &App<'_>) -> Response {
        page("application/manifest+json", manifest(app), "no-cache")
    }

    /// The service worker.
    pub fn service_worker_page(app: &App<'_>) -> Response {
        page("text/javascript; charset=utf-8", service_worker(app), "no-cache")
    }

    /// A session refused: 401 without a session, 403 without its CSRF token; `{"error": …}`.
    pub fn refused(e: SessionError) -> Response {
        let status = match e {
            SessionError::NoSession => StatusCode::UNAUTHORIZED,
            SessionError::Csrf => StatusCode::FORBIDDEN,
        };
        (status, Json(json!({"error": e.to_string()}))).into_response()
    }

    /// Opens a session for `signer` (checked by the caller): its cookie for `path` and its CSRF
    /// token.
    pub fn signed_in(sessions: &Sessions, signer: &str, path: &str, secure: bool) -> Response {
        let (token, session) = sessions.open(signer);
        let lifetime = sessions.limits().lifetime;
        let mut r =
            Json(json!({"signer": signer, "csrf": session.csrf, "expires_in": lifetime.as_secs()})).into_response();
        r.headers_mut()
            .insert(header::SET_COOKIE, session_cookie(&token, path, secure, lifetime));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// Who is signed in, and the session's CSRF token.
    pub fn who(sessions: &Sessions, method: &Method, headers: &HeaderMap) -> Response {
        match sessions.check(method, headers) {
            Ok(s) => {
                let mut r = Json(json!({
                    "signer": s.signer,
                    "csrf": s.csrf,
                    "expires_in": s.expires.saturating_duration_since(Instant::now()).as_secs(),
                }))
                .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(e) => refused(e),
        }
    }

    /// Signs out: the session ends on the server and its cookie for `path` is cleared.
    pub fn signed_out(sessions: &Sessions, method: &Method, headers: &HeaderMap, path: &str, secure: bool) -> Response {
        match sessions.close(method, headers) {
            Ok(s) => {
                let mut r = Json(json!({"signed_out": s.signer})).into_response();
                r.headers_mut().insert(header::SET_COOKIE, clear_cookie(path, secure));
                r
            }
            Err(e) => refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(token: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; {COOKIE}={token}").parse().unwrap());
        if let Some(c) = csrf {
            h.insert(CSRF_HEADER, c.parse().unwrap());
        }
        h
    }

    #[test]
    fn sessions_are_bounded_checked_and_ended() {
        let s = Sessions::new(SessionLimits {
            max: 3,
            per_signer: 2,
            lifetime: Duration::from_secs(60),
        });
        let (t1, s1) = s.open("alice");
        assert_eq!(s.check(&Method::GET, &with_cookie(&t1, None)), Ok(s1.clone()));
        assert_eq!(s.check(&Method::POST, &with_cookie(&t1, None)), Err(SessionError::Csrf));
        assert_eq!(
            s.check(&Method::POST, &with_cookie(&t1, Some("nope"))),
            Err(SessionError::Csrf)
        );
        assert!(s.check(&Method::POST, &with_cookie(&t1, Some(&s1.csrf))).is_ok());
        // Alice's third session ends her first.
        let (t2, _) = s.open("alice");
        let (_t3, _) = s.open("alice");
        assert_eq!(
            s.check(&Method::GET, &with_cookie(&t1, None)),
            Err(SessionError::NoSession)
        );
        // A full table ends the oldest.
        s.open("bob");
        assert_eq!(s.len(), 3);
        s.open("carol");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.check(&Method::GET, &with_cookie(&t2, None)),
            Err(SessionError::NoSession)
        );
        let (t4, s4) = s.open("dave");
        assert_eq!(
            s.close(&Method::DELETE, &with_cookie(&t4, None)),
            Err(SessionError::Csrf)
        );
        assert!(s.close(&Method::DELETE, &with_cookie(&t4, Some(&s4.csrf))).is_ok());
        assert_eq!(
            s.check(&Method::GET, &with_cookie(&t4, None)),
            Err(SessionError::NoSession)
        );
    }

    #[test]
    fn sessions_expire() {
        let s = Sessions::new(SessionLimits {
            max: 3,
            per_signer: 2,
            lifetime: Duration::ZERO,
        });
        let (t, _) = s.open("alice");
        assert_eq!(
            s.check(&Method::GET, &with_cookie(&t, None)),
            Err(SessionError::NoSession)
        );
    }

    #[test]
    fn the_shell_links_its_manifest_and_files() {
        let app = App {
            base: "/",
            mode: "fleet",
            title: "Infernet <fleet>",
            session: "/api/v1/session",
            assets: "/ui/",
            sw: "/sw.js",
            manifest: "/manifest.webmanifest",
        };
        let html = shell(&app);
        assert!(html.contains("<link rel=\"manifest\" href=\"/manifest.webmanifest\">"));
        assert!(html.contains("Infernet &lt;fleet&gt;"));
        let m: serde_json::Value = serde_json::from_str(&manifest(&app)).unwrap();
        assert_eq!(m["start_url"], "/");
        assert!(service_worker(&app).starts_with("const VERSION"));
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{}", a.name);
        }
    }
}
