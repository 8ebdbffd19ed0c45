//! The ledger summed per node, UTC day, operator and container set (table `ledger_days`), so that
//! a year of earnings reads a few hundred sums instead of every job's row: over a year of a busy
//! node's rows, summing the rows took 500–600 ms, the sums take a few (docs/benchmarks.md).
//!
//! The sums are exact, never rebuilt later:
//! - a ledger row is written once, when its job has ended, and never updated; the batch writer
//!   adds each row it inserts to its day's sums in the same transaction ([`Added`]), a row
//!   already there (written twice) adds nothing;
//! - retention ([`Db::prune_ledger`]) deletes the sums of the days it deletes wholly and takes
//!   the rows it deletes of its last, partial day off that day's sums, in the transaction that
//!   deletes the rows: what is past retention is gone from both, as the README says.
//!
//! Readers ask for a range of Unix ms: the whole UTC days in it come from the sums, the partial
//! days at its edges from the rows ([`Split`]), so the answer is what the rows say. Prices are
//! floating point: a sum read here can differ from a sum over the rows in its last digits (the
//! additions come in another order); counts and durations are equal.

use std::collections::BTreeMap;

use super::ledger::LedgerRow;

/// A UTC day, in ms.
pub const DAY_MS: i64 = 86_400_000;

/// The day of `ms` as the SQL statements cut it (`finished_at / 86400000`, an integer division).
pub(super) fn day_of(ms: i64) -> i64 {
    ms / DAY_MS
}

/// A range of Unix ms `[from, to)` cut into the part before its first whole day, its whole days
/// and the part after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    /// Ms before the first whole day, read from the rows.
    pub head: Option<(i64, i64)>,
    /// Whole days `[first, end)` (days since the epoch, none before it), read from the sums.
    pub days: Option<(i64, i64)>,
    /// Ms after the last whole day, read from the rows.
    pub tail: Option<(i64, i64)>,
}

impl Split {
    pub(super) fn of(from: i64, to: i64) -> Self {
        // Days before the epoch are read from the rows: SQL's division cuts them differently.
        let first = (from.div_euclid(DAY_MS) + i64::from(from.rem_euclid(DAY_MS) != 0)).max(0);
        let end = to.div_euclid(DAY_MS);
        if from >= to || first >= end {
            return Self {
                head: (from < to).then_some((from, to)),
                days: None,
                tail: None,
            };
        }
        let part = |a: i64, b: i64| (a < b).then_some((a, b));
        Self {
            head: part(from, first * DAY_MS),
            days: Some((first, end)),
            tail: part(end * DAY_MS, to),
        }
    }
}

/// One group's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Sums {
    pub jobs: i64,
    pub succeeded: i64,
    pub earned: f64,
    pub duration_ms: i64,
    pub succeeded_ms: i64,
}

/// The rows a batch inserted, summed by (node, day, operator or `""`, containers as stored); in
/// key order, so that replicas writing at once take their locks in the same order.
#[derive(Debug, Default)]
pub(super) struct Added(pub BTreeMap<(String, i64, String, String), Sums>);

impl Added {
    /// Counts `row`, whose containers are stored as `containers`.
    pub(super) fn add(&mut self, row: &LedgerRow, containers: String) {
        let key = (
            row.node.clone(),
            day_of(row.finished_at),
            row.operator.clone().unwrap_or_default(),
            containers,
        );
        let s = self.0.entry(key).or_default();
        let ok = row.outcome == "succeeded";
        s.jobs += 1;
        s.succeeded += i64::from(ok);
        s.earned += row.price.unwrap_or(0.0);
        s.duration_ms += row.duration_ms;
        s.succeeded_ms += if ok { row.duration_ms } else { 0 };
    }
}

/// Adds one group's sums; parameters: node, day, operator, containers, then [`Sums`] in order.
pub(super) const ADD: &str = "INSERT INTO ledger_days \
     (node, day, operator, containers, jobs, succeeded, earned, duration_ms, succeeded_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (node, day, operator, containers) DO UPDATE SET \
     jobs = ledger_days.jobs + excluded.jobs, succeeded = ledger_days.succeeded + excluded.succeeded, \
     earned = ledger_days.earned + excluded.earned, duration_ms = ledger_days.duration_ms + excluded.duration_ms, \
     succeeded_ms = ledger_days.succeeded_ms + excluded.succeeded_ms";

/// Takes the rows finished in `[$1 * 86400000, $2)` (all on day `$1`) off that day's sums.
pub(super) const SUBTRACT: &str = "UPDATE ledger_days SET jobs = ledger_days.jobs - g.jobs, \
     succeeded = ledger_days.succeeded - g.succeeded, earned = ledger_days.earned - g.earned, \
     duration_ms = ledger_days.duration_ms - g.duration_ms, succeeded_ms = ledger_days.succeeded_ms - g.succeeded_ms \
     FROM (SELECT node, COALESCE(operator, '') AS operator, containers, COUNT(*) AS jobs, \
     SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END) AS succeeded, COALESCE(SUM(price), 0.0) AS earned, \
     SUM(duration_ms) AS duration_ms, SUM(CASE WHEN outcome = 'succeeded' THEN duration_ms ELSE 0 END) AS succeeded_ms \
     FROM ledger WHERE finished_at >= $1 * 86400000 AND finished_at < $2 \
     GROUP BY node, COALESCE(operator, ''), containers) AS g \
     WHERE ledger_days.node = g.node AND ledger_days.day = $1 AND ledger_days.operator = g.operator \
     AND ledger_days.containers = g.containers";

/// Deletes the sums of days before `$1` and those of day `$1` that hold no row any more.
pub(super) const DELETE: &str = "DELETE FROM ledger_days WHERE day < $1 OR (day = $1 AND jobs <= 0)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_splits_into_whole_days_and_the_edges_around_them() {
        let d = DAY_MS;
        assert_eq!(
            Split::of(3 * d + 5, 7 * d + 9),
            Split {
                head: Some((3 * d + 5, 4 * d)),
                days: Some((4, 7)),
                tail: Some((7 * d, 7 * d + 9)),
            }
        );
        assert_eq!(
            Split::of(3 * d, 5 * d),
            Split {
                head: None,
                days: Some((3, 5)),
                tail: None,
            }
        );
        // Within one day, or less than a whole one: all from the rows.
        let rows = |from, to| Split {
            head: Some((from, to)),
            days: None,
            tail: None,
        };
        assert_eq!(Split::of(3 * d + 1, 4 * d + 1), rows(3 * d + 1, 4 * d + 1));
        assert_eq!(Split::of(3 * d, 3 * d + 10), rows(3 * d, 3 * d + 10));
        assert_eq!(
            Split::of(-5 * d, d),
            Split {
                head: Some((-5 * d, 0)),
                days: Some((0, 1)),
                tail: None,
            }
        );
        assert_eq!(
            Split::of(5, 5),
            Split {
                head: None,
                days: None,
                tail: None
            }
        );
    }

    #[test]
    fn a_batch_sums_rows_by_node_day_operator_and_containers() {
        let row = |node: &str, at: i64, outcome: &str, price: Option<f64>| LedgerRow {
            job_id: format!("{node}{at}"),
            client: "addr:x".into(),
            api_key_id: None,
            node: node.into(),
            operator: None,
            containers: vec!["a".into()],
            started_at: at,
            finished_at: at,
            outcome: outcome.into(),
            duration_ms: 100,
            price,
            unit: None,
            receipt: None,
        };
        let mut added = Added::default();
        for r in [
            row("n", 10, "succeeded", Some(1.5)),
            row("n", 20, "failed", None),
            row("n", DAY_MS + 1, "succeeded", Some(2.0)),
        ] {
            added.add(&r, "[\"a\"]".into());
        }
        let key = |day| ("n".to_string(), day, String::new(), "[\"a\"]".to_string());
        assert_eq!(
            added.0[&key(0)],
            Sums {
                jobs: 2,
                succeeded: 1,
                earned: 1.5,
                duration_ms: 200,
                succeeded_ms: 100
            }
        );
        assert_eq!(added.0[&key(1)].jobs, 1);
    }
}
