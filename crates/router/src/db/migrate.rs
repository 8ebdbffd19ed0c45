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
    (
        9,
        "running jobs by update",
        include_str!("../../migrations/sqlite/0009_running_jobs_by_update.sql"),
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
    (
        9,
        "running jobs by update",
        include_str!("../../migrations/postgres/0009_running_jobs_by_update.sql"),
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

/// Applies what is missing (of the migrations before `before`, when given). Several replicas
/// may start at once: sqlx takes an advisory lock on PostgreSQL, and SQLite's write lock
/// serialises them.
pub(super) async fn run(db: &Db, before: Option<i64>) -> Result<(), DbError> {
    let upto = |list: &'static [Embedded]| &list[..list.iter().take_while(|m| before.is_none_or(|v| m.0 < v)).count()];
    let result = match db.pool() {
        Pool::Sqlite(p) => migrator(upto(SQLITE)).run(p).await,
        Pool::Postgres(p) => migrator(upto(POSTGRES)).run(p).await,
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
}
