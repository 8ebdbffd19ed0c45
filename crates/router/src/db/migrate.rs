//! The schema migrations, embedded in the binary: one list per dialect, same versions in both.
//! Add a migration by adding a file to both directories and a line to both lists.

use std::borrow::Cow;

use sqlx::{
    SqlSafeStr,
    migrate::{MigrateError, Migration, MigrationType, Migrator},
};

use super::{Db, DbError, Pool};

/// (version, description, SQL).
type Embedded = (i64, &'static str, &'static str);

const SQLITE: &[Embedded] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (
        2,
        "api key usage",
        include_str!("../../migrations/sqlite/0002_api_key_usage.sql"),
    ),
    (
        3,
        "link inputs",
        include_str!("../../migrations/sqlite/0003_link_inputs.sql"),
    ),
    (
        5,
        "node history",
        include_str!("../../migrations/sqlite/0005_node_history.sql"),
    ),
    (6, "alerts", include_str!("../../migrations/sqlite/0006_alerts.sql")),
    (
        7,
        "ledger days",
        include_str!("../../migrations/sqlite/0007_ledger_days.sql"),
    ),
    (
        8,
        "link holders",
        include_str!("../../migrations/sqlite/0008_link_holders.sql"),
    ),
];

const POSTGRES: &[Embedded] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (
        2,
        "api key usage",
        include_str!("../../migrations/postgres/0002_api_key_usage.sql"),
    ),
    (
        3,
        "link inputs",
        include_str!("../../migrations/postgres/0003_link_inputs.sql"),
    ),
    (
        5,
        "node history",
        include_str!("../../migrations/postgres/0005_node_history.sql"),
    ),
    (6, "alerts", include_str!("../../migrations/postgres/0006_alerts.sql")),
    (
        7,
        "ledger days",
        include_str!("../../migrations/postgres/0007_ledger_days.sql"),
    ),
    (
        8,
        "link holders",
        include_str!("../../migrations/postgres/0008_link_holders.sql"),
    ),
];

fn migrator(list: &[Embedded]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Applies what is missing. Several replicas may start at once: sqlx takes an advisory lock on
/// PostgreSQL, and SQLite's write lock serialises them.
pub(super) async fn run(db: &Db) -> Result<(), DbError> {
    let result = match db.pool() {
        Pool::Sqlite(p) => migrator(SQLITE).run(p).await,
        Pool::Postgres(p) => migrator(POSTGRES).run(p).await,
    };
    result.map_err(|e| match e {
        MigrateError::VersionMissing(version) => DbError::NewerThanBinary { version },
        e => DbError::Migrate(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_versions() {
        let versions = |l: &[Embedded]| l.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(SQLITE.windows(2).all(|w| w[0].0 < w[1].0), "versions ascend");
    }

    /// A ledger written before migration 7 is summed into `ledger_days` by it.
    #[tokio::test]
    async fn the_day_sums_are_filled_from_the_rows_already_there() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let before = SQLITE.iter().filter(|m| m.0 < 7).count();
        migrator(&SQLITE[..before]).run(&pool).await.unwrap();
        let day = 20_000 * 86_400_000_i64;
        for (id, at, outcome, price) in [
            ("a", day + 5, "succeeded", Some(1.5)),
            ("b", day + 9, "failed", None),
            ("c", day + 86_400_000, "succeeded", Some(2.0)),
        ] {
            sqlx::query(
                "INSERT INTO ledger (job_id, client, node, operator, containers, started_at, finished_at, \
                 outcome, duration_ms, price) VALUES ($1, 'addr:x', 'n', NULL, '[\"x\"]', $2, $2, $3, 100, $4)",
            )
            .bind(id)
            .bind(at)
            .bind(outcome)
            .bind(price)
            .execute(&pool)
            .await
            .unwrap();
        }
        migrator(SQLITE).run(&pool).await.unwrap();
        let sums: Vec<(i64, String, i64, i64, f64, i64, i64)> = sqlx::query_as(
            "SELECT day, operator, jobs, succeeded, earned, duration_ms, succeeded_ms FROM ledger_days ORDER BY day",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            sums,
            [
                (20_000, String::new(), 2, 1, 1.5, 200, 100),
                (20_001, String::new(), 1, 1, 2.0, 100, 100)
            ]
        );
    }
}
