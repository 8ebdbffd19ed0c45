//! The router's database: nodes, operators, node settings, jobs, the ledger, API keys and metric
//! samples, in SQLite (a file, the default: no server to run) or PostgreSQL (several router
//! replicas sharing one state).
//!
//! - One schema, written once per dialect in `crates/router/migrations/{sqlite,postgres}`,
//!   embedded in the binary and applied by [`Db::open`]. A database that has a migration this
//!   binary does not know was written by a newer router: [`DbError::NewerThanBinary`].
//! - Queries are built at run time (no compile-time checked macros: they would need a database at
//!   build time and a second build of sqlx for the proc macro). Where the dialects differ the two
//!   statements sit side by side; most statements are the same text on both (`$1` parameters,
//!   `ON CONFLICT`, `RETURNING` are understood by both).
//! - One module per table: [`alerts`], [`nodes`], [`operators`], [`settings`], [`jobs`],
//!   [`ledger`] (summed per day in [`ledger_days`]), [`api_keys`], [`metrics`],
//!   [`link_holders`]; [`batcher`] writes ledger rows and metric samples in group commits,
//!   [`job_writer`] the gateway's job rows.
//! - Times are Unix milliseconds (`i64`); JSON documents are stored as text, as they came.
//! - Pools are bounded ([`DbSettings::max_connections`]); a caller that waits longer than
//!   [`DbSettings::acquire_timeout`] for a connection gets [`DbError::PoolTimedOut`]. SQLite runs
//!   in WAL mode (readers do not block the writer) with a busy timeout, and `synchronous =
//!   NORMAL`: a crashed process loses no commit, a power cut can lose the last ones.

pub mod alerts;
pub mod api_keys;
pub mod batcher;
pub mod job_writer;
pub mod jobs;
pub mod leases;
pub mod ledger;
pub mod ledger_days;
pub mod link_holders;
pub mod metrics;
mod migrate;
pub mod nodes;
pub mod operators;
pub mod settings;

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    ConnectOptions, Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

/// The default database: a SQLite file in the working directory, created if missing.
pub const DEFAULT_URL: &str = "sqlite://infernet-router.db";

/// How to reach the database.
#[derive(Clone)]
pub struct DbSettings {
    /// `sqlite://path` (`sqlite::memory:` for a throwaway one) or `postgres://user:pass@host/db`.
    /// Never logged: it can hold a password.
    pub url: String,
    /// Connections in the pool at most (default 8).
    pub max_connections: u32,
    /// How long a query waits for a free connection before [`DbError::PoolTimedOut`]
    /// (default 5 s).
    pub acquire_timeout: Duration,
    /// How long SQLite waits for another writer's lock before failing (default 5 s).
    pub busy_timeout: Duration,
}

impl DbSettings {
    /// Default pool bounds for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl DbSettings {
    /// The dialect the URL names (checked before anything is opened).
    pub fn dialect(&self) -> Result<Dialect, DbError> {
        match self.url.trim().split(':').next().unwrap_or_default() {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            other => Err(DbError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }
}

impl Default for DbSettings {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("url", &redacted(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .finish()
    }
}

/// `url` as the workspace shows URLs that can hold a password ([`SensitiveUrl`]: scheme, host and
/// port); a URL without a host (`sqlite::memory:`, `sqlite:relative.db`) shows its scheme only.
fn redacted(url: &str) -> String {
    match infernet_service::secret::SensitiveUrl::parse(url) {
        Ok(u) if !u.redacted().ends_with("://") => u.to_string(),
        _ => format!("{}:…", url.trim().split(':').next().unwrap_or_default()),
    }
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("--database-url: unsupported scheme \"{scheme}\"; use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl {
        /// What stood before `:`.
        scheme: String,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the database {url}: {source}")]
    Connect {
        /// The URL without credentials.
        url: String,
        /// What the driver said.
        source: sqlx::Error,
    },
    /// The database holds a migration this binary does not have: a newer router wrote it.
    #[error(
        "the database has schema migration {version}, which this infernet-router does not know: \
         a newer version wrote it; run that version (or newer), or restore a backup"
    )]
    NewerThanBinary {
        /// The unknown migration's version.
        version: i64,
    },
    /// Applying the embedded migrations failed.
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Every pooled connection stayed busy for the acquire timeout.
    #[error("all database connections stayed busy; the database is overloaded or unreachable")]
    PoolTimedOut,
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// A stored value is not what the router writes (edited by hand, or a newer router's).
    #[error("database column {column} holds {value:?}, which this router does not understand")]
    BadValue {
        /// The column.
        column: &'static str,
        /// The value.
        value: String,
    },
}

impl DbError {
    /// Whether trying again later may succeed (overload, lock contention, a dropped connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::PoolTimedOut => true,
            Self::Query(e) => {
                matches!(e, sqlx::Error::Io(_))
                    || e.as_database_error().and_then(|d| d.code()).is_some_and(|code| {
                        // PostgreSQL: serialization failure, deadlock. SQLite (extended codes):
                        // busy or locked in the low byte.
                        matches!(&*code, "40001" | "40P01")
                            || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                    })
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::PoolTimedOut,
            e => Self::Query(e),
        }
    }
}

/// Which SQL dialect a [`Db`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The connection pool of either dialect. The table modules are the API; this is public for
/// tools and tests that need plain SQL.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// A job's or a ledger row's containers as stored: a JSON list.
pub(crate) fn containers_json(containers: &[String]) -> Result<String, DbError> {
    serde_json::to_string(containers).map_err(|e| DbError::BadValue {
        column: "containers",
        value: e.to_string(),
    })
}

/// Appends `(…),(…)`: `rows` groups of `cols` parameters, `$n` numbered from 1 for PostgreSQL
/// and anonymous `?` for SQLite (whose lookup of numbered parameters grows with their count,
/// squared over a statement): the `VALUES` of a multi-row insert.
pub(crate) fn push_values(sql: &mut String, rows: usize, cols: usize, numbered: bool) {
    use std::fmt::Write;
    sql.reserve(rows * cols * 5);
    for r in 0..rows {
        sql.push_str(if r > 0 { ",(" } else { "(" });
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            match numbered {
                true => {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
                false => sql.push('?'),
            }
        }
        sql.push(')');
    }
}

/// Runs `$body` with `$pool` bound to the dialect's pool; the second form also binds `$sql` to the
/// dialect's statement. The body is compiled once per dialect.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.pool() {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
    ($db:expr, sqlite: $lite:expr, postgres: $pg:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $db.pool() {
            $crate::db::Pool::Sqlite($pool) => {
                let $sql = $lite;
                $body
            }
            $crate::db::Pool::Postgres($pool) => {
                let $sql = $pg;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Implements `FromRow` for both dialects' rows with one body (`row` is the row).
macro_rules! from_row {
    ($ty:ty, |$row:ident| $body:expr) => {
        impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for $ty {
            fn from_row($row: &'r sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                $body
            }
        }
        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $ty {
            fn from_row($row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                $body
            }
        }
    };
}
pub(crate) use from_row;

/// A column that holds text the router parses (a status, a JSON array): the decode error names it.
pub(crate) fn parse_column<T, E>(
    column: &'static str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, sqlx::Error>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parse(text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

/// One column as [`Db::describe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type in the PostgreSQL spelling (`bigint`, `text`, `double precision`).
    pub data_type: String,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

/// The router's database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// For an in-memory SQLite database, a connection of its own that keeps it alive: it lives
    /// as long as one connection to it is open, and the pool's one connection may be closed and
    /// opened again (a request cancelled mid-query) — which emptied the database under load.
    _anchor: Option<Arc<sqlx::SqliteConnection>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("dialect", &self.dialect()).finish()
    }
}

impl Db {
    /// Opens the database `settings` names (creating a SQLite file if missing) and applies the
    /// embedded migrations.
    pub async fn open(settings: &DbSettings) -> Result<Self, DbError> {
        Self::open_before(settings, None).await
    }

    /// [`Db::open`], applying only the migrations before `version` when given: for tests of what a
    /// migration does to the rows an earlier schema holds.
    #[doc(hidden)]
    pub async fn open_before(settings: &DbSettings, version: Option<i64>) -> Result<Self, DbError> {
        let dialect = settings.dialect()?;
        let url = settings.url.trim();
        let connect = |source| DbError::Connect {
            url: redacted(url),
            source,
        };
        let mut anchor = None;
        let pool = match dialect {
            Dialect::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(connect)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(settings.busy_timeout)
                    .foreign_keys(true)
                    // Pages kept in memory: 32 MB, not 2 (the default). The gateway's rows touch
                    // the jobs' and the ledger's indexes all over.
                    .pragma("cache_size", "-32768")
                    // The WAL is copied back every 4,000 pages (16 MB), not 1,000: a page written
                    // many times in between is copied once.
                    .pragma("wal_autocheckpoint", "4000")
                    .disable_statement_logging();
                if url.contains(":memory:") || url.contains("mode=memory") {
                    use sqlx::ConnectOptions;
                    anchor = Some(Arc::new(options.connect().await.map_err(connect)?));
                }
                // One connection: SQLite takes one writer at a time, and writers that contend for
                // its lock wait in its busy handler, which sleeps in milliseconds; queued here
                // instead, they follow each other at once.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Pool::Sqlite(pool)
            }
            Dialect::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(connect)?
                    .disable_statement_logging();
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections.max(1))
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Pool::Postgres(pool)
            }
        };
        let db = Self { pool, _anchor: anchor };
        migrate::run(&db, version).await?;
        Ok(db)
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The connection pool, for plain SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }

    /// The router's tables and their columns (the migration bookkeeping table left out), in the
    /// same spelling for both dialects.
    pub async fn describe(&self) -> Result<BTreeMap<String, Vec<Column>>, DbError> {
        let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
        match &self.pool {
            Pool::Sqlite(p) => {
                let rows = sqlx::query(
                    "SELECT m.name AS tbl, c.name AS col, c.type AS ty, c.\"notnull\" AS nn, c.pk AS pk \
                     FROM sqlite_schema m JOIN pragma_table_info(m.name) c \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations' \
                     ORDER BY m.name, c.cid",
                )
                .fetch_all(p)
                .await?;
                for r in rows {
                    let ty: String = r.try_get("ty")?;
                    let not_null: i64 = r.try_get("nn")?;
                    let pk: i64 = r.try_get("pk")?;
                    tables.entry(r.try_get("tbl")?).or_default().push(Column {
                        name: r.try_get("col")?,
                        data_type: match ty.to_ascii_lowercase().as_str() {
                            "integer" => "bigint".into(),
                            "real" => "double precision".into(),
                            other => other.to_owned(),
                        },
                        // PostgreSQL makes primary key columns NOT NULL; SQLite reports them as
                        // declared.
                        nullable: not_null == 0 && pk == 0,
                    });
                }
            }
            Pool::Postgres(p) => {
                let rows = sqlx::query(
                    "SELECT table_name::text AS tbl, column_name::text AS col, data_type::text AS ty, \
                     is_nullable::text AS nullable FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                     ORDER BY table_name, ordinal_position",
                )
                .fetch_all(p)
                .await?;
                for r in rows {
                    let nullable: String = r.try_get("nullable")?;
                    tables.entry(r.try_get("tbl")?).or_default().push(Column {
                        name: r.try_get("col")?,
                        data_type: r.try_get("ty")?,
                        nullable: nullable == "YES",
                    });
                }
            }
        }
        Ok(tables)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_memory_database_outlives_its_pool_connection() {
        let db = Db::open(&DbSettings::new("sqlite::memory:")).await.unwrap();
        let Pool::Sqlite(pool) = db.pool() else { unreachable!() };
        sqlx::query("INSERT INTO operators (pubkey, first_seen, last_seen) VALUES ('k', 0, 0)")
            .execute(pool)
            .await
            .unwrap();
        // The pool's one connection goes (as when a request is cancelled mid-query); the next
        // query opens another, on the same database.
        pool.acquire().await.unwrap().close().await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM operators")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn credentials_never_show() {
        let s = DbSettings::new("postgres://router:s3cret@db.example:5432/infernet");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("router:"), "{shown}");
        assert!(shown.contains("postgres://db.example:5432/…"), "{shown}");
        assert_eq!(redacted("sqlite://infernet-router.db"), "sqlite://infernet-router.db/…");
        assert_eq!(redacted("postgres://h/db?password=x"), "postgres://h/…");
        assert_eq!(redacted("sqlite::memory:"), "sqlite:…");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_named() {
        let e = Db::open(&DbSettings::new("mysql://x@y/z")).await.unwrap_err();
        assert!(
            matches!(e, DbError::UnsupportedUrl { ref scheme } if scheme == "mysql"),
            "{e}"
        );
    }
}
