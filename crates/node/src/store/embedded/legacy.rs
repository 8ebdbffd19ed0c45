//! Conversion of a job store written by earlier builds, which kept its records in a `redb`
//! database, to the log format. The records themselves (JSON) are the same.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::log::LogError;

const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");

/// Why a file of the earlier format could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum LegacyError {
    /// The database does not open (locked, or damaged).
    #[error("cannot open the earlier (redb) format: {0} (is another node using this file?)")]
    Open(#[source] redb::DatabaseError),
    /// A read transaction could not start.
    #[error("{0}")]
    Transaction(#[from] redb::TransactionError),
    /// The jobs table is not what this store wrote.
    #[error("{0} (a file of another program? set store.path)")]
    Table(#[source] redb::TableError),
    /// A record could not be read.
    #[error("{0}")]
    Storage(#[from] redb::StorageError),
}

/// Rewrites the redb database at `path` as a log, in place; the database stays untouched until
/// the log that replaces it is whole.
pub(super) fn convert(path: &Path) -> Result<(), LogError> {
    let records = read_records(path)?;
    super::log::create_with(path, &records)?;
    tracing::info!(
        jobs = records.len(),
        path = %path.display(),
        "job store converted from the earlier redb format"
    );
    Ok(())
}

/// Every record of the redb database at `path`, in key order.
fn read_records(path: &Path) -> Result<Vec<Vec<u8>>, LegacyError> {
    let db = Database::open(path).map_err(LegacyError::Open)?;
    let read = db.begin_read()?;
    match read.open_table(JOBS) {
        Ok(table) => Ok(table
            .iter()?
            .map(|row| row.map(|(_, v)| v.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
        Err(e) => Err(LegacyError::Table(e)),
    }
}
