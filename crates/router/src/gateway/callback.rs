//! Result callbacks: a job submitted with `callback_url` is watched by the replica that holds its
//! lease, which reads the node's result (every 100 ms at first, backing off to
//! [`GatewaySettings::callback_poll`](super::GatewaySettings)) and, once the job has ended, POSTs
//! `{"id", "node", "status", "result"}` to the URL, retried with backoff until it answers 2xx or
//! the attempts run out.
//!
//! Delivery is at least once: the callback is posted before the job's row is finished, so a router
//! that dies in between posts it again after a restart (a sweep takes over jobs whose watcher
//! stopped: their lease ran out). A node that stays unreachable for
//! [`GatewaySettings::node_gone_after`](super::GatewaySettings) fails the job, and that is posted.
//!
//! Callback URLs are `http(s)` only, and, unless `--callbacks-to-private` is set, not loopback,
//! private or link-local addresses nor `localhost`, so that clients cannot make the router call
//! its own network (a host name is not resolved for this check). Redirects are not followed.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use infernet_service::retry::RetryPolicy;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::db::{
    DbError,
    jobs::{Job, JobStatus},
    now_ms,
};

/// Longest callback URL.
const MAX_URL: usize = 2048;
/// Jobs a sweep takes over at most.
const SWEEP: i64 = 500;

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Longer than [`MAX_URL`].
    #[error("longer than {MAX_URL} bytes")]
    TooLong,
    /// Not a URL.
    #[error("not a URL: {0}")]
    NotUrl(url::ParseError),
    /// Not http(s).
    #[error("must be an http:// or https:// URL")]
    Scheme,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// A loopback, private or link-local address, not allowed here.
    #[error("names a loopback, private or link-local address; this router calls only public ones")]
    Private,
}

/// Checks a callback URL: the URL as it will be called.
pub fn check_url(text: &str, allow_private: bool) -> Result<String, UrlError> {
    if text.len() > MAX_URL {
        return Err(UrlError::TooLong);
    }
    let url = url::Url::parse(text).map_err(UrlError::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    let private = match url.host() {
        None => return Err(UrlError::NoHost),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
    };
    if private && !allow_private {
        return Err(UrlError::Private);
    }
    Ok(url.into())
}

/// Resolves names to public addresses only, for the callbacks' client: a name is checked when the
/// router calls it, not only when the URL is taken (a name can point anywhere, and change), so a
/// callback URL naming `internal.example` that resolves to `10.0.0.5` is never called. Addresses
/// written as such are checked by [`check_url`]; redirects are not followed.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address; this router calls only public ones").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A loopback, private, shared (CGNAT), link-local, unspecified or broadcast address: one of
/// the router's own networks, never called for a stranger unless the operator allows it.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

impl Gateway {
    /// Starts watching `job` (placed, with a callback) if a watcher is free; otherwise the sweep
    /// takes it once its lease runs out.
    pub(super) fn watch(self: &Arc<Self>, job: Job) {
        match self.watchers.clone().try_acquire_owned() {
            Ok(permit) => {
                let gw = self.clone();
                tokio::spawn(async move {
                    gw.follow(job).await;
                    drop(permit);
                });
            }
            Err(_) => tracing::warn!(job = %job.id, "all callback watchers busy; the sweep will take the job over"),
        }
    }

    /// Follows `job` until it ended, posts its callback, and records its end.
    async fn follow(self: &Arc<Self>, job: Job) {
        let (Some(node), Some(node_job), Some(url)) =
            (job.node.clone(), job.node_job.clone(), job.callback_url.clone())
        else {
            return;
        };
        let mut delay = Duration::from_millis(100);
        let mut unreachable_since: Option<Instant> = None;
        let mut receipt = None;
        let (status, result, error) = loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.settings.callback_poll);
            // A linked node whose link closed: its lease runs out (see `lease`), not renewed here.
            let renewed = match self.lapsing(&node) {
                true => self
                    .db
                    .job(&job.id)
                    .await
                    .map(|j| j.is_some_and(|j| j.attempt == job.attempt)),
                false => self.db.renew_job_lease(&job.id, job.attempt, &self.lease()).await,
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => match self.db.job(&job.id).await {
                    // Read by its client meanwhile (who finished its row): still to be posted.
                    Ok(Some(now))
                        if now.attempt == job.attempt
                            && matches!(now.status, JobStatus::Succeeded | JobStatus::Failed) => {}
                    // Cancelled, or taken over by another replica.
                    _ => return,
                },
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not renew a watched job's lease"),
            }
            match self.read_job(&node, &node_job, &job.client).await {
                Ok((JobStatus::Running, ..)) if self.ran_too_long(job.created_at) => {
                    let said = self.stop_on_node(&node, &node_job, &job.client).await;
                    tracing::debug!(job = %job.id, %node, node_said = %said, "a watched job ran too long");
                    let why = format!(
                        "still running after {:?}; the router stopped waiting",
                        self.settings.max_running
                    );
                    break (JobStatus::Failed, serde_json::Value::Null, Some(why));
                }
                Ok((JobStatus::Running, ..)) => unreachable_since = None,
                Ok((status, result, signed)) => {
                    receipt = signed;
                    break (status, json!(result), None);
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.settings.node_gone_after {
                        let why = format!("the node stopped answering about the job: {e}");
                        break (JobStatus::Failed, serde_json::Value::Null, Some(why));
                    }
                }
            }
        };
        let mut body = json!({"id": job.id, "node": node, "status": status.as_str(), "result": result});
        if let Some(error) = &error {
            body["error"] = json!(error);
        }
        self.post_callback(&job.id, &url, &body).await;
        let error = error.or_else(|| (status == JobStatus::Failed).then(|| "the node reports the job failed".into()));
        match self
            .db
            .finish_job(&job.id, job.attempt, status, error.as_deref(), now_ms())
            .await
        {
            Ok(Some(done)) => {
                self.record(
                    &node,
                    &job.containers,
                    status == JobStatus::Succeeded,
                    Some(done.updated_at - job.created_at),
                );
                self.account_with(&done, receipt.map(crate::ledger::receipt::Received::plain));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record a watched job's end"),
        }
    }

    /// Whether a job created at `created_at` (Unix ms) has run longer than `max_running`.
    pub(super) fn ran_too_long(&self, created_at: i64) -> bool {
        let limit = i64::try_from(self.settings.max_running.as_millis()).unwrap_or(i64::MAX);
        now_ms().saturating_sub(created_at) > limit
    }

    /// POSTs `body` to `url` until it answers 2xx, backing off between attempts.
    async fn post_callback(&self, job: &str, url: &str, body: &serde_json::Value) {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: self.settings.callback_attempts.max(1),
        };
        let body = body.to_string();
        let mut last = String::new();
        for attempt in 1..=policy.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(policy.jittered_delay(attempt - 2)).await;
            }
            let sent = self
                .callbacks
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        tracing::warn!(%job, attempts = policy.max_attempts, error = %last, "the job's callback was never accepted");
    }

    /// Every `callback_sweep`, takes over watched jobs whose watcher stopped (their lease ran
    /// out: a router that restarted or died), until `shutdown`.
    pub async fn sweep_callbacks(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.settings.callback_sweep) => {}
            }
            let jobs = match self.db.unwatched_callback_jobs(now_ms(), SWEEP).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for unwatched callbacks");
                    continue;
                }
            };
            for job in jobs {
                if self.watchers.available_permits() == 0 {
                    break;
                }
                // The claim is atomic: of several replicas, one takes each job.
                match self.db.claim_job(&job.id, &self.lease()).await {
                    Ok(Some(claimed)) => self.watch(claimed),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "could not take over a watched job"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_the_routers_own_networks_is_not_called() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        // `localhost` resolves to loopback addresses only (from /etc/hosts).
        let e = PublicOnly.resolve(name("localhost")).await.err().expect("refused");
        assert!(e.to_string().contains("no public address"), "{e}");
        // A client built with it does not call such a name, though something answers there; one
        // without it does.
        infernet_service::install_tls_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let hook = format!("http://localhost:{port}/hook");
        let plain = reqwest::Client::new();
        assert!(plain.post(&hook).send().await.unwrap().status().is_success());
        let public = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
            .unwrap();
        let e = public.post(&hook).send().await.expect_err("not called");
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("no public address"), "{chain}");
    }

    #[test]
    fn callbacks_go_to_public_http_urls_only_unless_allowed() {
        assert!(check_url("https://app.example/hook?x=1", false).is_ok());
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.5/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://100.64.0.1/hook",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(check_url("ftp://app.example/hook", true).is_err());
        assert!(check_url("not a url", true).is_err());
        assert!(check_url(&format!("https://a.example/{}", "x".repeat(3000)), true).is_err());
    }
}
