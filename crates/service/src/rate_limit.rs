//! Per-client, per-route rate limiting (GCRA): `num_requests` per `period`, like Ritual's node,
//! keyed by the client address the server trusts (never a client-supplied header). A refused
//! request is answered 429 with `Retry-After` and a JSON `{"error": ...}` body.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode, header::RETRY_AFTER},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`: named once here, because parsing a
/// header name on every answer showed up in profiles of the streaming path.
const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Keyed GCRA limiter.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    /// `limit` as a header value, the same on every answer.
    limit_header: HeaderValue,
    period: Duration,
    /// Theoretical arrival time per (route, client), at most `max_clients` of them.
    tat: Mutex<Buckets>,
    /// Most (route, client) buckets held; see [`RateLimiter::with_max_clients`].
    max_clients: usize,
}

/// The buckets, and when full ones may next be swept of those that have drained.
#[derive(Debug)]
struct Buckets {
    /// Hashed with a per-process random seed: a client picks its key only among the addresses it
    /// holds, and SipHash here was 1.4 % of the node's work per streamed job.
    map: HashMap<(&'static str, IpAddr), Instant, foldhash::quality::RandomState>,
    /// A full map is swept at most once per [`SWEEP_EVERY`], so that a flood of new addresses does
    /// not cost a walk of the whole map per request.
    next_sweep: Option<Instant>,
}

/// Buckets held by default.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
/// Least time between two sweeps of a full map.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// `limit` requests per `period`, holding at most [`DEFAULT_MAX_CLIENTS`] buckets.
    pub fn new(limit: u64, period: Duration) -> Self {
        Self::with_max_clients(limit, period, DEFAULT_MAX_CLIENTS)
    }

    /// `limit` requests per `period`, holding at most `max_clients` (route, client) buckets: when
    /// that many are live (not yet drained), a client without one is refused (429) until a
    /// bucket drains. Refusing, not evicting: an evicted bucket would hand its client a fresh
    /// allowance, so a flood of addresses would lift everyone's limit.
    pub fn with_max_clients(limit: u64, period: Duration, max_clients: usize) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            limit_header: HeaderValue::from(limit),
            period,
            tat: Mutex::new(Buckets {
                map: HashMap::default(),
                next_sweep: None,
            }),
            max_clients: max_clients.max(1),
        }
    }

    fn interval(&self) -> Duration {
        self.period / u32::try_from(self.limit).unwrap_or(u32::MAX)
    }

    /// Accounts one request of `client` on `route` now: [`Allowed`] when it may go on, else
    /// [`Refused`]. (No future is passed in: the hot path awaits its own answer in place, rather
    /// than handing a large future down to be moved once more.)
    pub fn admit(&self, route: &'static str, client: IpAddr) -> Result<Allowed, Refused> {
        self.check(route, client, Instant::now())
    }

    /// Whether `client` could make one more request on `route` now, without accounting it (a
    /// client without a bucket could): for limits charged only to requests that fail, looked at
    /// before the work of finding out.
    pub fn peek(&self, route: &'static str, client: IpAddr) -> Result<(), Refused> {
        let now = Instant::now();
        let buckets = self.tat.lock().expect("rate limiter poisoned");
        let ahead = buckets
            .map
            .get(&(route, client))
            .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
        self.within(ahead)
    }

    /// Refused when a bucket's theoretical arrival time is `ahead` of now by more than a burst
    /// of the limit allows.
    fn within(&self, ahead: Duration) -> Result<(), Refused> {
        let tolerance = self.period.saturating_sub(self.interval());
        match ahead > tolerance {
            true => Err(Refused {
                retry_after: ahead - tolerance,
            }),
            false => Ok(()),
        }
    }

    /// [`Self::admit`] at `now`.
    fn check(&self, route: &'static str, client: IpAddr, now: Instant) -> Result<Allowed, Refused> {
        let t = self.interval();
        let mut buckets = self.tat.lock().expect("rate limiter poisoned");
        let Buckets { map: tat, next_sweep } = &mut *buckets;
        if tat.len() >= self.max_clients && !tat.contains_key(&(route, client)) {
            if next_sweep.is_none_or(|at| now >= at) {
                tat.retain(|_, v| *v > now);
                *next_sweep = Some(now + SWEEP_EVERY);
            }
            if tat.len() >= self.max_clients {
                return Err(Refused {
                    retry_after: next_sweep.map_or(SWEEP_EVERY, |at| at.saturating_duration_since(now)),
                });
            }
        }
        let entry = tat.entry((route, client)).or_insert(now);
        let current = (*entry).max(now);
        self.within(current - now)?;
        let next = current + t;
        *entry = next;
        let used = next - now;
        let remaining = (self.period.saturating_sub(used).as_nanos() / t.as_nanos().max(1)) as u64;
        Ok(Allowed { remaining, reset: used })
    }
}

/// Runs `next` when `client` may make one more request on `route` (see [`RateLimiter::admit`]).
/// The node's and the router's middleware both end here.
pub async fn enforce(limiter: &RateLimiter, route: &'static str, client: IpAddr, req: Request, next: Next) -> Response {
    match limiter.admit(route, client) {
        Ok(allowed) => allowed.stamp(limiter, next.run(req).await),
        Err(refused) => refused.into_response(),
    }
}

/// A request refused: answered 429 with `Retry-After` (whole seconds, at least 1).
#[derive(Debug)]
pub struct Refused {
    /// Time until one request fits.
    retry_after: Duration,
}

impl Refused {
    /// Time until one request fits.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs_f64().ceil();
        let mut response = crate::http::error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests; retry in {secs}s"),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1.0) as u64));
        response
    }
}

/// A request let through, to be answered with the limiter's headers.
#[derive(Debug)]
pub struct Allowed {
    /// Requests left in the current window.
    remaining: u64,
    /// Time until the bucket is full again.
    reset: Duration,
}

impl Allowed {
    /// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` to `response`.
    pub fn stamp(self, limiter: &RateLimiter, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(LIMIT, limiter.limit_header.clone());
        headers.insert(REMAINING, number(self.remaining));
        headers.insert(RESET, number(self.reset.as_secs_f64().ceil() as u64));
        response
    }
}

/// `n` as a header value, in one allocation (`HeaderValue::from(u64)` makes three).
fn number(n: u64) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(itoa::Buffer::new().format(n).as_bytes()))
        .expect("digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peek_accounts_nothing_and_sees_what_admit_would_refuse() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(limiter.peek("r", ip).is_ok());
        }
        assert!(limiter.admit("r", ip).is_ok());
        assert!(limiter.admit("r", ip).is_ok());
        let refused = limiter.peek("r", ip).unwrap_err();
        assert!(refused.retry_after() > Duration::ZERO);
        assert!(limiter.admit("r", ip).is_err());
        assert!(limiter.peek("other", ip).is_ok());
    }

    #[test]
    fn allows_the_limit_then_denies_until_a_slot_frees() {
        let limiter = RateLimiter::new(3, Duration::from_secs(3));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let remaining: Vec<u64> = (0..3)
            .map(|_| match limiter.check("r", ip, t0) {
                Ok(Allowed { remaining, .. }) => remaining,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let Err(Refused { retry_after }) = limiter.check("r", ip, t0) else {
            panic!("should deny")
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        assert!(limiter.check("r", ip, t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check("r", ip, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn routes_and_clients_have_their_own_buckets() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.check("x", a, t0).is_ok());
        assert!(limiter.check("x", a, t0).is_err());
        assert!(limiter.check("y", a, t0).is_ok());
        assert!(limiter.check("x", b, t0).is_ok());
    }

    #[test]
    fn the_buckets_have_a_hard_cap_and_full_ones_are_swept_at_most_once_a_second() {
        let limiter = RateLimiter::with_max_clients(1, Duration::from_secs(10), 2);
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let t0 = Instant::now();
        assert!(limiter.check("r", ip(1), t0).is_ok());
        assert!(limiter.check("r", ip(2), t0).is_ok());
        // Two live buckets: a third client is refused, and nothing was added.
        assert!(limiter.check("r", ip(3), t0).is_err());
        assert!(limiter.check("r", ip(4), t0 + Duration::from_millis(500)).is_err());
        assert_eq!(limiter.tat.lock().unwrap().map.len(), 2);
        // Clients that hold a bucket are still served by it.
        assert!(limiter.check("r", ip(1), t0 + Duration::from_secs(10)).is_ok());
        // Once a bucket drained, the next sweep makes room.
        assert!(limiter.check("r", ip(3), t0 + Duration::from_secs(11)).is_ok());
        assert_eq!(limiter.tat.lock().unwrap().map.len(), 2);
    }

    #[tokio::test]
    async fn a_refusal_is_json_with_retry_after() {
        use http_body_util::BodyExt;
        let refused = Refused {
            retry_after: Duration::from_millis(1500),
        };
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "too many requests; retry in 2s");
    }
}
