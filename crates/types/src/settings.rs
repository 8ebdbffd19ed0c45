//! The provider's settings for a node: when it takes jobs (a weekly schedule in a named time zone,
//! with whole-day exceptions), what its containers cost, and the resources each may use.
//!
//! The node applies them and advertises them; the router reads the same document to route around
//! a node outside its hours or above a client's price. Everything here is pure: [`Settings::parse`]
//! reads the JSON and reports every problem at once with its path, [`Settings::check`] compares
//! the limits with the host, and [`Availability::at`] answers "available now, and if not, from
//! when". Time zones come from the IANA database bundled in the binary (jiff), so a node in a
//! `FROM scratch` image answers as one with the system's database.
//!
//! A window whose `to` is not after its `from` runs overnight (`"18:00"`–`"08:00"` on Friday ends
//! on Saturday morning); `"24:00"` is the end of the day. An exception decides a whole local date:
//! `available: false` closes it, overnight windows spilling into it included; `true` opens all of it.

use std::{collections::BTreeMap, fmt};

use jiff::{
    Timestamp,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};
use serde::{Deserialize, Serialize};

/// How far ahead [`Availability::at`] looks for the next opening.
const HORIZON_DAYS: u32 = 400;
/// Minutes in a day.
const DAY: u16 = 24 * 60;

/// The settings document of `GET|PUT /admin/settings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// When the node takes new off-chain jobs; always, without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
    /// Price per container id.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Resource limits per container id.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
}

/// A weekly schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Open windows.
    #[serde(default)]
    pub weekly: Vec<Window>,
    /// Whole local dates that differ from the weekly schedule.
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    /// Chain subscriptions are served outside the schedule too (a paid subscription left unserved
    /// costs its owner).
    #[serde(default = "yes")]
    pub chain_outside: bool,
}

fn yes() -> bool {
    true
}

/// Open from `from` to `to` on each of `days` (local time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub from: String,
    /// `HH:MM`, or `24:00`; not after `from` means the next day.
    pub to: String,
}

/// One local date open or closed whatever the weekly schedule says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Open all day (`true`) or closed all day (`false`).
    pub available: bool,
}

/// What a container's jobs cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_job: Option<f64>,
    /// Per second of compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// The unit both are in, e.g. `USD`.
    pub unit: String,
}

impl Price {
    /// The price of one job of `seconds` of compute.
    pub fn of_job(&self, seconds: f64) -> f64 {
        self.per_job.unwrap_or(0.0) + self.per_second.unwrap_or(0.0) * seconds
    }
}

/// What one container may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// GPUs: a count, or the device ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
    /// Jobs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u32>,
}

/// GPUs a container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Gpus {
    /// This many, any of them.
    Count(u32),
    /// These device ids.
    Devices(Vec<u32>),
}

/// What the host has, for [`Settings::check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// GPUs visible.
    pub gpus: u32,
}

/// One problem of a settings document: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, e.g. `availability.weekly[0].from`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem of a settings document (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

impl std::error::Error for Problems {}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Reads and validates a settings document: every problem, each with its path.
    pub fn parse(json: &str) -> Result<Self, Problems> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let settings: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { "settings".to_string() } else { path };
            Problems(vec![problem(path, e.inner().to_string())])
        })?;
        let mut problems = Vec::new();
        if let Some(availability) = &settings.availability {
            availability.validate(&mut problems);
        }
        for (id, price) in &settings.pricing {
            price.validate(&format!("pricing.{id}"), &mut problems);
        }
        for (id, limits) in &settings.limits {
            limits.validate(&format!("limits.{id}"), &mut problems);
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(Problems(problems))
        }
    }

    /// Problems of valid settings on this node: containers it does not run, limits beyond the host.
    pub fn check(&self, containers: &[&str], host: &Host) -> Result<(), Problems> {
        let mut problems = Vec::new();
        let known = |section: &str, id: &str, problems: &mut Vec<Problem>| {
            if !containers.contains(&id) {
                problems.push(problem(
                    format!("{section}.{id}"),
                    format!("this node runs no container {id:?} (it runs {})", containers.join(", ")),
                ));
            }
        };
        for id in self.pricing.keys() {
            known("pricing", id, &mut problems);
        }
        for (id, limits) in &self.limits {
            known("limits", id, &mut problems);
            limits.check_host(&format!("limits.{id}"), host, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }
}

impl Price {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        for (name, value) in [("per_job", self.per_job), ("per_second", self.per_second)] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                problems.push(problem(
                    format!("{path}.{name}"),
                    format!("{v} is not a price: use 0 or more"),
                ));
            }
        }
        if self.unit.trim().is_empty() || self.unit.len() > 16 {
            problems.push(problem(
                format!("{path}.unit"),
                "name the unit, e.g. \"USD\" (1-16 characters)",
            ));
        }
    }
}

impl Limits {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(cpus) = self.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            problems.push(problem(format!("{path}.cpus"), format!("{cpus} CPUs: use more than 0")));
        }
        if self.memory_mb == Some(0) {
            problems.push(problem(format!("{path}.memory_mb"), "use more than 0 MiB"));
        }
        if self.max_jobs == Some(0) {
            problems.push(problem(format!("{path}.max_jobs"), "use 1 or more"));
        }
        if let Some(Gpus::Devices(ids)) = &self.gpus {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != ids.len() {
                problems.push(problem(format!("{path}.gpus"), "a device id is listed twice"));
            }
        }
    }

    fn check_host(&self, path: &str, host: &Host, problems: &mut Vec<Problem>) {
        if let Some(cpus) = self.cpus
            && cpus > host.cpus
        {
            problems.push(problem(
                format!("{path}.cpus"),
                format!("{cpus} CPUs asked, the host has {}", host.cpus),
            ));
        }
        if let Some(mb) = self.memory_mb
            && mb > host.memory_mb
        {
            problems.push(problem(
                format!("{path}.memory_mb"),
                format!("{mb} MiB asked, the host has {} MiB", host.memory_mb),
            ));
        }
        let beyond = match &self.gpus {
            Some(Gpus::Count(n)) => *n > host.gpus,
            Some(Gpus::Devices(ids)) => ids.iter().any(|id| *id >= host.gpus),
            None => false,
        };
        if beyond {
            problems.push(problem(
                format!("{path}.gpus"),
                format!("the host has {} GPU(s) visible (device ids 0 to n-1)", host.gpus),
            ));
        }
    }
}

/// Whether a node takes jobs at a moment, and when it next does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Taking jobs now.
    pub now: bool,
    /// When closed: the next moment it opens (none within about a year: never).
    pub next: Option<Timestamp>,
}

impl Availability {
    fn validate(&self, problems: &mut Vec<Problem>) {
        if TimeZone::get(&self.timezone).is_err() {
            problems.push(problem(
                "availability.timezone",
                format!(
                    "unknown time zone {:?}: use an IANA name such as Europe/Berlin",
                    self.timezone
                ),
            ));
        }
        for (i, w) in self.weekly.iter().enumerate() {
            let path = format!("availability.weekly[{i}]");
            if w.days.is_empty() {
                problems.push(problem(format!("{path}.days"), "name at least one day (mon … sun)"));
            }
            for (j, day) in w.days.iter().enumerate() {
                if weekday(day).is_none() {
                    problems.push(problem(
                        format!("{path}.days[{j}]"),
                        format!("{day:?} is not mon, tue, wed, thu, fri, sat or sun"),
                    ));
                }
            }
            let from = minutes(&w.from).filter(|m| *m < DAY);
            let to = minutes(&w.to).filter(|m| *m > 0);
            if from.is_none() {
                problems.push(problem(
                    format!("{path}.from"),
                    format!("{:?} is not a time HH:MM from 00:00 to 23:59", w.from),
                ));
            }
            if to.is_none() {
                problems.push(problem(
                    format!("{path}.to"),
                    format!("{:?} is not a time HH:MM from 00:01 to 24:00", w.to),
                ));
            }
            if from.is_some() && from == to {
                problems.push(problem(
                    format!("{path}.to"),
                    "equal to `from`: for a whole day use 00:00 to 24:00",
                ));
            }
        }
        for (i, e) in self.exceptions.iter().enumerate() {
            if e.date.parse::<Date>().is_err() || e.date.len() != 10 {
                problems.push(problem(
                    format!("availability.exceptions[{i}].date"),
                    format!("{:?} is not a date YYYY-MM-DD", e.date),
                ));
            }
        }
    }

    /// Whether the schedule is open at `now`, and if not, when it next opens. A schedule that does
    /// not validate is open.
    pub fn at(&self, now: Timestamp) -> Open {
        let Ok(tz) = TimeZone::get(&self.timezone) else {
            return Open { now: true, next: None };
        };
        let local = now.to_zoned_datetime(tz.clone());
        let today = local.date();
        let minute = local.time().hour() as u16 * 60 + local.time().minute() as u16;
        if self
            .open_on(today)
            .iter()
            .any(|(from, to)| *from <= minute && minute < *to)
        {
            return Open { now: true, next: None };
        }
        let mut date = today;
        for _ in 0..HORIZON_DAYS {
            let start = self
                .open_on(date)
                .into_iter()
                .map(|(from, _)| from)
                .find(|from| date != today || *from > minute);
            if let Some(from) = start {
                let time = Time::new((from / 60) as i8, (from % 60) as i8, 0, 0).unwrap_or(Time::midnight());
                let next = date.to_datetime(time).to_zoned_datetime(tz).ok().map(|z| z.timestamp());
                return Open { now: false, next };
            }
            let Ok(tomorrow) = date.tomorrow() else { break };
            date = tomorrow;
        }
        Open { now: false, next: None }
    }

    /// The open intervals `[from, to)` of a local date, in minutes since midnight, in order.
    fn open_on(&self, date: Date) -> Vec<(u16, u16)> {
        if let Some(e) = self
            .exceptions
            .iter()
            .rev()
            .find(|e| e.date.parse::<Date>().ok() == Some(date))
        {
            return if e.available { vec![(0, DAY)] } else { Vec::new() };
        }
        let today = date.weekday();
        let yesterday = today.previous();
        let mut open = Vec::new();
        for w in &self.weekly {
            let (Some(from), Some(to)) = (minutes(&w.from), minutes(&w.to)) else {
                continue;
            };
            let on = |day: Weekday| w.days.iter().any(|d| weekday(d) == Some(day));
            if from < to {
                if on(today) {
                    open.push((from, to));
                }
            } else {
                if on(today) {
                    open.push((from, DAY));
                }
                if on(yesterday) && to > 0 {
                    open.push((0, to));
                }
            }
        }
        open.sort_unstable();
        open
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// `HH:MM` as minutes since midnight (`24:00` is 1440).
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_SAMPLE: &str = r#"{"availability": {"timezone": "Europe/Berlin", "weekly": [{"days": ["mon","tue","wed","thu","fri"],
      "from": "18:00", "to": "08:00"}, {"days": ["sat","sun"], "from": "00:00", "to": "24:00"}],
      "exceptions": [{"date": "2026-12-24", "available": false}], "chain_outside": true},
      "pricing": {"hello-world": {"per_job": 0.002, "per_second": 0.0005, "unit": "USD"}},
      "limits": {"hello-world": {"cpus": 2, "memory_mb": 4096, "gpus": [0], "max_jobs": 4}}}"#;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule() -> Availability {
        Settings::parse(ISSUE_SAMPLE).unwrap().availability.unwrap()
    }

    #[test]
    fn weekday_evenings_and_weekends_in_berlin() {
        let s = schedule();
        // Wednesday 2026-12-02, 10:00 in Berlin (09:00 UTC): closed until 18:00 Berlin.
        assert_eq!(
            s.at(at("2026-12-02T09:00:00Z")),
            Open {
                now: false,
                next: Some(at("2026-12-02T17:00:00Z"))
            }
        );
        // 20:00 Berlin, and 07:59 the next morning (the overnight window): open.
        assert!(s.at(at("2026-12-02T19:00:00Z")).now);
        assert!(s.at(at("2026-12-03T06:59:00Z")).now);
        // 08:00 Berlin: closed again.
        assert!(!s.at(at("2026-12-03T07:00:00Z")).now);
        // Saturday all day.
        assert!(s.at(at("2026-12-05T12:00:00Z")).now);
    }

    #[test]
    fn an_exception_closes_its_whole_date_and_the_next_opening_skips_it() {
        let s = schedule();
        // Thursday 2026-12-24 is closed: the overnight window from Wednesday does not spill into it.
        assert!(!s.at(at("2026-12-23T23:30:00Z")).now);
        // From Thursday noon the next opening is Friday 00:00 Berlin: the spill of Thursday's
        // evening window (Thursday itself is closed, so its evening does not open).
        assert_eq!(s.at(at("2026-12-24T11:00:00Z")).next, Some(at("2026-12-24T23:00:00Z")));
        let mut open = s.clone();
        open.exceptions = vec![Exception {
            date: "2026-12-02".into(),
            available: true,
        }];
        assert!(open.at(at("2026-12-02T09:00:00Z")).now);
    }

    #[test]
    fn the_next_opening_follows_the_clock_change() {
        let s = schedule();
        // Friday 2026-03-27, 10:00 CET (UTC+1): opens 18:00 CET = 17:00 UTC.
        assert_eq!(s.at(at("2026-03-27T09:00:00Z")).next, Some(at("2026-03-27T17:00:00Z")));
        // Monday 2026-03-30, 10:00 CEST (UTC+2): opens 18:00 CEST = 16:00 UTC.
        assert_eq!(s.at(at("2026-03-30T08:00:00Z")).next, Some(at("2026-03-30T16:00:00Z")));
    }

    #[test]
    fn a_schedule_that_never_opens_says_so() {
        let never = Availability {
            timezone: "UTC".into(),
            weekly: vec![],
            exceptions: vec![],
            chain_outside: true,
        };
        assert_eq!(never.at(at("2026-12-02T09:00:00Z")), Open { now: false, next: None });
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let bad = r#"{"availability": {"timezone": "Mars/Olympus", "weekly": [{"days": ["mon", "funday"], "from": "25:00", "to": "8"},
            {"days": [], "from": "10:00", "to": "10:00"}], "exceptions": [{"date": "2026-13-01", "available": false}]},
            "pricing": {"a": {"per_job": -1, "unit": ""}}, "limits": {"a": {"cpus": 0, "max_jobs": 0}}}"#;
        let Problems(problems) = Settings::parse(bad).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "availability.timezone",
                "availability.weekly[0].days[1]",
                "availability.weekly[0].from",
                "availability.weekly[0].to",
                "availability.weekly[1].days",
                "availability.weekly[1].to",
                "availability.exceptions[0].date",
                "pricing.a.per_job",
                "pricing.a.unit",
                "limits.a.cpus",
                "limits.a.max_jobs",
            ]
        );
        let typed = Settings::parse(r#"{"pricing": {"a": {"per_job": "cheap", "unit": "USD"}}}"#).unwrap_err();
        assert_eq!(typed.0[0].path, "pricing.a.per_job");
        let unknown = Settings::parse(r#"{"pricing": {}, "colour": "red"}"#).unwrap_err();
        assert!(unknown.0[0].message.contains("colour"), "{unknown}");
    }

    #[test]
    fn limits_beyond_the_host_and_unknown_containers_are_refused() {
        let settings = Settings::parse(ISSUE_SAMPLE).unwrap();
        let big = Host {
            cpus: 8.0,
            memory_mb: 16_384,
            gpus: 1,
        };
        assert_eq!(settings.check(&["hello-world"], &big), Ok(()));
        let here = Host {
            cpus: 2.0,
            memory_mb: 2048,
            gpus: 0,
        };
        let Problems(problems) = settings.check(&["other"], &here).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pricing.hello-world",
                "limits.hello-world",
                "limits.hello-world.memory_mb",
                "limits.hello-world.gpus"
            ]
        );
        assert!(problems[3].message.contains("0 GPU"), "{}", problems[3]);
        let price = &settings.pricing["hello-world"];
        assert!((price.of_job(60.0) - 0.032).abs() < 1e-12);
    }
}
