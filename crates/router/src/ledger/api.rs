//! The ledger's HTTP answers:
//!
//! - `GET /api/v1/nodes/{node}` (public): the node's record as this router measured it — success
//!   rate, latency per container set, uptime over 24 h / 7 d / 30 d, jobs per day, and how often
//!   each of the chooser's filters left it out over the last 24 h ("why am I not getting jobs").
//! - `GET /api/v1/earnings?node=…` (public) and `?operator=npub…` (only for a NIP-98 request that
//!   operator signed): sums per day, week or month (`by`), each beside the period before it.
//! - `GET /api/v1/nodes/{node}/jobs` (only for the node's operator, NIP-98): its ledger rows with
//!   their receipts and how each checks against the node's key; clients appear only as hashes.
//!
//! Dates are UTC calendar days, `YYYY-MM-DD`; `from` and `to` are both included. `format=csv`
//! answers CSV instead of JSON.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use infernet_identity::PublicKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::receipt;
use crate::{
    db::{
        ledger::{DaySum, Whose},
        now_ms,
    },
    gateway::{ApiError, Caller, Client},
    server::RouterState,
};

const DAY_MS: i64 = 86_400_000;
/// Longest range one answer covers, in days.
pub const MAX_DAYS: i64 = 3_660;
/// Most rows one page of `/api/v1/nodes/{node}/jobs` holds.
pub const MAX_PAGE: i64 = 1_000;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn parse_date(name: &str, text: &str) -> Result<i64, ApiError> {
    let fail = || bad(format!("{name}: a date as YYYY-MM-DD (UTC), got {text:?}"));
    let mut parts = text.splitn(3, '-');
    let mut next = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i64>().ok())
    };
    let (y, m, d) = (
        next(4).ok_or_else(fail)?,
        next(2).ok_or_else(fail)?,
        next(2).ok_or_else(fail)?,
    );
    let day = days_from_civil(y, m, d);
    // A date that does not exist (2026-02-30) does not come back the same.
    if (1..=12).contains(&m) && civil_from_days(day) == (y, m, d) {
        Ok(day)
    } else {
        Err(fail())
    }
}

/// How periods are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// UTC days.
    Day,
    /// ISO weeks (Monday to Sunday).
    Week,
    /// Calendar months.
    Month,
}

impl By {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(bad(format!("by: one of day, week, month; got {other:?}"))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The start of the period holding `day`.
    fn start(self, day: i64) -> i64 {
        match self {
            Self::Day => day,
            // 1970-01-01 was a Thursday.
            Self::Week => day - (day + 3).rem_euclid(7),
            Self::Month => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1)
            }
        }
    }

    /// The start of the period after the one starting on `start`.
    fn next(self, start: i64) -> i64 {
        match self {
            Self::Day => start + 1,
            Self::Week => start + 7,
            Self::Month => {
                let (y, m, _) = civil_from_days(start);
                if m == 12 {
                    days_from_civil(y + 1, 1, 1)
                } else {
                    days_from_civil(y, m + 1, 1)
                }
            }
        }
    }

    /// The start of the period before the one starting on `start`.
    fn previous(self, start: i64) -> i64 {
        self.start(start - 1)
    }
}

/// One period's sums.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Period {
    /// First day.
    pub start: i64,
    /// Rows.
    pub jobs: i64,
    /// Rows that succeeded.
    pub succeeded: i64,
    /// Prices summed.
    pub earned: f64,
    /// Durations summed, ms.
    pub duration_ms: i64,
}

impl Period {
    fn add(&mut self, d: &DaySum) {
        self.jobs += d.jobs;
        self.succeeded += d.succeeded;
        self.earned += d.earned;
        self.duration_ms += d.duration_ms;
    }

    fn json(&self) -> Value {
        json!({"start": date(self.start), "jobs": self.jobs, "succeeded": self.succeeded,
               "earned": self.earned, "duration_ms": self.duration_ms})
    }
}

/// Sums `days` (sorted, days since the epoch) into periods `by`, from the period holding `from`
/// to the one holding `last` (both days): each period, and the one before it beside it.
pub fn periods(days: &[DaySum], by: By, from: i64, last: i64) -> Vec<(Period, Period)> {
    let first = by.start(from);
    let mut starts = vec![by.previous(first)];
    let mut s = first;
    while s <= last {
        starts.push(s);
        s = by.next(s);
    }
    let mut sums: Vec<Period> = starts
        .iter()
        .map(|&start| Period {
            start,
            ..Period::default()
        })
        .collect();
    for d in days {
        // The last period whose start is at or before the day.
        let i = starts.partition_point(|&s| s <= d.day);
        if i > 0 && d.day <= last {
            sums[i - 1].add(d);
        }
    }
    sums.windows(2).map(|w| (w[1], w[0])).collect()
}

fn total(periods: impl Iterator<Item = Period>) -> Period {
    periods.fold(Period::default(), |mut t, p| {
        t.jobs += p.jobs;
        t.succeeded += p.succeeded;
        t.earned += p.earned;
        t.duration_ms += p.duration_ms;
        t
    })
}

/// The query's parameters, checked against `known`.
fn query(raw: Option<String>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (k, _) in &pairs {
        if !known.contains(&k.as_str()) {
            return Err(bad(format!("{k}: unknown parameter; known: {}", known.join(", "))));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `from` and `to` (days, both included): by default the 30 days up to today.
fn range(pairs: &[(String, String)]) -> Result<(i64, i64), ApiError> {
    let today = now_ms().div_euclid(DAY_MS);
    let to = param(pairs, "to")
        .map(|t| parse_date("to", t))
        .transpose()?
        .unwrap_or(today);
    let from = param(pairs, "from")
        .map(|f| parse_date("from", f))
        .transpose()?
        .unwrap_or(to - 29);
    if from > to {
        return Err(bad(format!("from ({}) is after to ({})", date(from), date(to))));
    }
    if to - from >= MAX_DAYS {
        return Err(bad(format!("from to to spans more than {MAX_DAYS} days; ask for less")));
    }
    Ok((from, to))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format(pairs: &[(String, String)]) -> Result<Format, ApiError> {
    match param(pairs, "format") {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(bad(format!("format: json or csv, got {other:?}"))),
    }
}

fn csv(header: &str, lines: impl Iterator<Item = String>) -> Response {
    let mut out = String::from(header);
    out.push('\n');
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response()
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The operator a NIP-98 request was signed by, or 401.
fn signer(client: &Client, what: &str) -> Result<PublicKey, ApiError> {
    match client {
        Client::Key(k) => Ok(*k),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            format!("{what} answers only a request signed with NIP-98 by the operator's key"),
        )),
    }
}

fn node_name(node: &str) -> Result<(), ApiError> {
    if node.is_empty() || node.len() > 300 {
        return Err(bad("node: a node's host:port as the router lists it"));
    }
    Ok(())
}

/// `GET /api/v1/earnings?node=…|operator=…&from=&to=&by=day|week|month&format=json|csv`.
pub async fn earnings(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query(raw, &["node", "operator", "from", "to", "by", "format"])?;
    let (from, to) = range(&pairs)?;
    let by = param(&pairs, "by").map(By::parse).transpose()?.unwrap_or(By::Day);
    let format = format(&pairs)?;
    let operator_hex;
    let (whose, label) = match (param(&pairs, "node"), param(&pairs, "operator")) {
        (Some(node), None) => {
            node_name(node)?;
            (Whose::Node(node), json!({"node": node}))
        }
        (None, Some(operator)) => {
            let wanted = infernet_identity::parse_public_key(operator)
                .map_err(|_| bad(format!("operator: an npub1… or 64-hex key, got {operator:?}")))?;
            let signed = signer(&client, "earnings?operator=")?;
            if signed != wanted {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "an operator's earnings answer only a request that operator signed".into(),
                ));
            }
            operator_hex = wanted.to_hex();
            (
                Whose::Operator(&operator_hex),
                json!({"operator": infernet_identity::npub(&wanted)}),
            )
        }
        _ => return Err(bad("give node=HOST:PORT or operator=NPUB (one of them)")),
    };
    let first = by.previous(by.start(from));
    let days = state
        .gateway
        .db()
        .ledger_days(whose, first * DAY_MS, (to + 1) * DAY_MS)
        .await?;
    let periods = periods(&days, by, from, to);
    let now = total(periods.iter().map(|p| p.0));
    let before = total(periods.iter().map(|p| p.1));
    let unit = &state.gateway.settings().price_unit;
    if format == Format::Csv {
        let lines = periods.iter().map(|(p, prev)| {
            format!(
                "{},{},{},{},{},{},{},{}",
                date(p.start),
                p.jobs,
                p.succeeded,
                p.earned,
                p.duration_ms,
                date(prev.start),
                prev.jobs,
                prev.earned
            )
        });
        return Ok(csv(
            &format!(
                "start,jobs,succeeded,earned_{unit},duration_ms,previous_start,previous_jobs,previous_earned_{unit}"
            ),
            lines,
        ));
    }
    let mut answer = json!({
        "unit": unit,
        "by": by.as_str(),
        "from": date(by.start(from)),
        "to": date(to),
        "periods": periods.iter().map(|(p, prev)| {
            let mut v = p.json();
            v["previous"] = prev.json();
            v
        }).collect::<Vec<_>>(),
        "total": now.json(),
        "previous_total": before.json(),
        "settled": false,
    });
    for (k, v) in label.as_object().into_iter().flatten() {
        answer[k] = v.clone();
    }
    Ok(Json(answer).into_response())
}

fn rate(ok: i64, failed: i64) -> Value {
    match ok + failed {
        0 => Value::Null,
        n => json!(ok as f64 / n as f64),
    }
}

/// `GET /api/v1/nodes/{node}`: the node's public record.
pub async fn node(State(state): State<Arc<RouterState>>, Path(node): Path<String>) -> Result<Json<Value>, ApiError> {
    node_name(&node)?;
    let db = state.gateway.db();
    let now = now_ms();
    let minute = now.div_euclid(60_000);
    let mut uptime = serde_json::Map::new();
    let mut day = Default::default();
    let mut month = Default::default();
    for (name, minutes) in [("24h", 24 * 60), ("7d", 7 * 24 * 60), ("30d", 30 * 24 * 60)] {
        let t = db.metric_totals(&node, minute - minutes, minute + 1).await?;
        uptime.insert(name.into(), rate(t.probes_ok, t.probes_failed));
        match name {
            "24h" => day = t,
            "30d" => month = t,
            _ => {}
        }
    }
    let today = now.div_euclid(DAY_MS);
    let days = db
        .ledger_days(Whose::Node(&node), (today - 29) * DAY_MS, now + 1)
        .await?;
    let latency = db.ledger_latency(&node, now - 30 * DAY_MS, now + 1).await?;
    let record = db.node(&node).await?;
    let identity = state.gateway.registry().identity(&node);
    let available = state
        .gateway
        .registry()
        .snapshot()
        .available
        .iter()
        .any(|n| n.key == node);
    if record.is_none() && days.is_empty() && month == Default::default() && identity.is_none() && !available {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node {node} is known to this router; use its host:port as /api/v1/nodes lists it"),
        ));
    }
    let (ok, failed) = record.as_ref().map_or((0, 0), |r| (r.jobs_ok, r.jobs_failed));
    Ok(Json(json!({
        "node": node,
        "available": available,
        "identity": identity,
        "success_rate": {"all_time": rate(ok, failed), "30d": rate(month.jobs_ok, month.jobs_failed)},
        "jobs": {"succeeded": ok, "failed": failed},
        "latency_ms": latency.iter().map(|l| json!({
            "containers": l.containers, "jobs": l.jobs, "mean_ms": l.mean_ms,
        })).collect::<Vec<_>>(),
        "uptime": uptime,
        "jobs_per_day": days.iter().map(|d| json!({
            "day": date(d.day), "jobs": d.jobs, "succeeded": d.succeeded,
        })).collect::<Vec<_>>(),
        "excluded_24h": {
            "price": day.excluded_price,
            "hours": day.excluded_hours,
            "hardware": day.excluded_hardware,
            "health": day.excluded_health,
            "load": day.excluded_load,
        },
    })))
}

/// A client as an operator sees it: a hash that tells clients apart and names none.
pub fn client_hash(client: &str) -> String {
    format!("client:{}", hex::encode(&Sha256::digest(client.as_bytes())[..12]))
}

/// `GET /api/v1/nodes/{node}/jobs?from=&to=&limit=&after=&format=json|csv`: the node's rows, for
/// its operator only.
pub async fn node_jobs(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    node_name(&node)?;
    let pairs = query(raw, &["from", "to", "limit", "after", "format"])?;
    let (from, to) = range(&pairs)?;
    let format = format(&pairs)?;
    let limit = match param(&pairs, "limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| bad(format!("limit: a whole number from 1 to {MAX_PAGE}, got {v:?}")))?,
    };
    let after = param(&pairs, "after")
        .map(|a| {
            a.split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| bad("after: the `next` of a previous page"))
        })
        .transpose()?;
    let operator = signer(&client, "a node's jobs")?;
    let hex = operator.to_hex();
    let npub = infernet_identity::npub(&operator);
    let gw = &state.gateway;
    let identity = gw.registry().identity(&node);
    let listed = identity.as_ref().is_some_and(|i| i.operators.contains(&npub));
    if !listed && !gw.db().operates(&node, &hex).await? {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{npub} is not an operator of {node}: its signed statement does not name that key"),
        ));
    }
    let node_key = identity
        .as_ref()
        .and_then(|i| infernet_identity::parse_public_key(&i.key).ok());
    let rows = gw
        .db()
        .ledger_rows(
            &node,
            &hex,
            (from * DAY_MS, (to + 1) * DAY_MS),
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit,
        )
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| format!("{}.{}", r.row.finished_at, r.row.job_id)))
        .flatten();
    let checked: Vec<(Value, receipt::Check)> = rows
        .iter()
        .map(|r| {
            let row = &r.row;
            let check = receipt::check(row, r.node_job.as_deref(), node_key.as_ref());
            let v = json!({
                "job": row.job_id, "client": client_hash(&row.client), "containers": row.containers,
                "started_at": row.started_at, "finished_at": row.finished_at, "outcome": row.outcome,
                "duration_ms": row.duration_ms, "price": row.price, "unit": row.unit,
                "node_job": r.node_job, "receipt": row.receipt,
            });
            (v, check)
        })
        .collect();
    if format == Format::Csv {
        let lines = checked.iter().map(|(v, check)| {
            let text = |k: &str| match &v[k] {
                Value::Null => String::new(),
                Value::String(s) => field(s),
                other => field(&other.to_string()),
            };
            let check = match check {
                receipt::Check::Valid { .. } => "valid".to_string(),
                receipt::Check::Missing => "missing".to_string(),
                receipt::Check::Forged { why } => field(&format!("forged: {why}")),
            };
            [
                "job",
                "client",
                "containers",
                "started_at",
                "finished_at",
                "outcome",
                "duration_ms",
                "price",
                "unit",
                "receipt",
            ]
            .iter()
            .map(|k| text(k))
            .chain([check])
            .collect::<Vec<_>>()
            .join(",")
        });
        return Ok(csv(
            "job,client,containers,started_at,finished_at,outcome,duration_ms,price,unit,receipt,receipt_check",
            lines,
        ));
    }
    let jobs: Vec<Value> = checked
        .into_iter()
        .map(|(mut v, check)| {
            v["check"] = json!(check);
            v
        })
        .collect();
    Ok(Json(json!({
        "node": node,
        "node_key": node_key.map(|k| infernet_identity::npub(&k)),
        "jobs": jobs,
        "next": next,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(date(days_from_civil(2026, 12, 3)), "2026-12-03");
        assert_eq!(date(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert!(parse_date("from", "2026-02-30").is_err());
        assert!(parse_date("from", "2026-1-05").is_err());
        assert_eq!(parse_date("from", "2000-03-01").unwrap(), days_from_civil(2000, 3, 1));
    }

    #[test]
    fn periods_cut_at_calendar_boundaries_with_the_previous_beside() {
        let d = |y, m, dd| days_from_civil(y, m, dd);
        // 2026-11-30 is a Monday.
        assert_eq!(By::Week.start(d(2026, 12, 3)), d(2026, 11, 30));
        assert_eq!(By::Month.next(d(2026, 12, 1)), d(2027, 1, 1));
        assert_eq!(By::Month.previous(d(2026, 3, 1)), d(2026, 2, 1));
        let sum = |day, jobs, earned| DaySum {
            day,
            jobs,
            succeeded: jobs,
            earned,
            duration_ms: 0,
        };
        let days = [
            sum(d(2026, 10, 31), 1, 1.0),
            sum(d(2026, 11, 1), 2, 2.0),
            sum(d(2026, 12, 1), 4, 4.0),
        ];
        let months = periods(&days, By::Month, d(2026, 11, 15), d(2026, 12, 31));
        assert_eq!(months.len(), 2);
        assert_eq!(
            (months[0].0.start, months[0].0.jobs, months[0].1.jobs),
            (d(2026, 11, 1), 2, 1)
        );
        assert_eq!(
            (months[1].0.start, months[1].0.earned, months[1].1.earned),
            (d(2026, 12, 1), 4.0, 2.0)
        );
    }

    #[test]
    fn a_csv_field_with_a_comma_or_quote_is_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
    }
}
