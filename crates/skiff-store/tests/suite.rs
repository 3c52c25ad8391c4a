//! openraft's own storage test suite, run against Skiff's sled log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use skiff_store::log_store::LogStore;
use skiff_store::state_machine::{StateMachineConfig, StateMachineStore};
use skiff_store::TypeConfig;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log =
            LogStore::open(&dir.path().join("raft-log"), 16 << 20).map_err(|e| openraft::StorageIOError::write(&e))?;
        let sm =
            StateMachineStore::open(dir.path(), StateMachineConfig { cache_bytes: 16 << 20, ..Default::default() })?;
        Ok((dir, log, sm))
    }
}

/// Runs from a plain `#[test]`: the suite starts its own runtime.
#[test]
fn sled_store_passes_openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(SledBuilder)
}
