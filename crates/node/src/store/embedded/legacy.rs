//! Conversion of a job store written by earlier builds, which kept its records in a `redb`
//! database, to the log format. The records themselves (JSON) are the same.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");

/// Rewrites the redb database at `path` as a log, in place; the database stays untouched until
/// the log that replaces it is whole.
pub(super) fn convert(path: &Path) -> Result<(), String> {
    let records = {
        let db = Database::open(path)
            .map_err(|e| format!("cannot open the earlier (redb) format: {e} (is another node using this file?)"))?;
        let read = db.begin_read().map_err(|e| e.to_string())?;
        match read.open_table(JOBS) {
            Ok(table) => table
                .iter()
                .map_err(|e| e.to_string())?
                .map(|row| row.map(|(_, v)| v.value().to_vec()).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(e) => return Err(format!("{e} (a file of another program? set store.path)")),
        }
    };
    super::log::create_with(path, &records)?;
    tracing::info!(
        jobs = records.len(),
        path = %path.display(),
        "job store converted from the earlier redb format"
    );
    Ok(())
}
