//! The data directory's memory of its own database.
//!
//! sled opens a database whose log was truncated or deleted as an empty one, without a word
//! (a small database has no snapshot to notice it by). kefu would then start as if new:
//! every conversation, every unanswered message and every queued reply silently gone. So
//! kefu keeps a checkpoint number in two places: in the database (`kv`) and in a small file
//! beside it (`kefu-marker.json`). A checkpoint bumps the number in the database, flushes,
//! then writes the file (atomically: temp file, fsync, rename), so the file never runs ahead
//! of what is on disk. At start the database must hold at least the file's number; less
//! means it lost what it had, and kefu refuses to start with a message that says so.
//!
//! It catches an emptied, replaced or truncated database (anything that loses the last
//! checkpoint); it cannot see a loss of the writes since the last checkpoint (taken every
//! few seconds while serving, and at every clean stop).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Store;

pub const MARKER_FILE: &str = "kefu-marker.json";
/// The checkpoint number inside the database.
const CHECKPOINT_KEY: &str = "kefu:checkpoint";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    checkpoint: u64,
    written_ms: u64,
    #[serde(default)]
    about: String,
}

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER_FILE)
}

fn stored_checkpoint(store: &dyn Store) -> anyhow::Result<u64> {
    Ok(match store.kv_get(CHECKPOINT_KEY)? {
        Some(v) => u64::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 8])),
        None => 0,
    })
}

/// Refuse a database that lost data the marker remembers. No marker: nothing to compare
/// (a new data directory, or one from before markers).
pub fn check(dir: &Path, store: &dyn Store, now_ms: u64) -> anyhow::Result<()> {
    let path = marker_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("server.data_dir: cannot read {}: {e}", path.display()),
    };
    let marker: Marker = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "server.data_dir: {} is unreadable ({e}); it records how much the database held. \
             Restore it with the database, or delete it to start from what the database holds now",
            path.display()
        )
    })?;
    let held = stored_checkpoint(store)?;
    if held >= marker.checkpoint {
        return Ok(());
    }
    let ago_s = now_ms.saturating_sub(marker.written_ms) / 1000;
    let now_holds = if held == 0 {
        "it is empty now".to_string()
    } else {
        format!("it holds only checkpoint {held}")
    };
    anyhow::bail!(
        "server.data_dir: the database in {dir} has lost data: {marker_file} records checkpoint {want} \
         ({ago_s} s ago), but {now_holds}. Its files were truncated, replaced or deleted. \
         kefu will not start on it, since conversations, unanswered messages and queued replies \
         would be silently gone. Restore {dir} from a backup; or, to start over with what the \
         database holds now, delete {path}",
        dir = dir.display(),
        marker_file = MARKER_FILE,
        want = marker.checkpoint,
        path = path.display(),
    )
}

/// Bump the checkpoint in the database, flush, then record it beside the database.
pub fn checkpoint(dir: &Path, store: &dyn Store, now_ms: u64) -> anyhow::Result<u64> {
    let next = stored_checkpoint(store)? + 1;
    store.kv_put(CHECKPOINT_KEY, &next.to_be_bytes())?;
    store.flush()?;
    let marker = Marker {
        checkpoint: next,
        written_ms: now_ms,
        about: "kefu refuses to start when the database in this directory holds less than this checkpoint (it was truncated or replaced); see README.md".into(),
    };
    let path = marker_path(dir);
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&marker)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    // The rename itself must reach the disk too.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SledStore};

    #[test]
    fn a_fresh_directory_passes_and_a_checkpoint_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        check(dir.path(), &store, 0).unwrap();
        assert_eq!(checkpoint(dir.path(), &store, 1000).unwrap(), 1);
        assert_eq!(checkpoint(dir.path(), &store, 2000).unwrap(), 2);
        check(dir.path(), &store, 3000).unwrap();
    }

    #[test]
    fn an_emptied_database_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(dir.path(), &MemoryStore::new(), 1000).unwrap();
        let err = check(dir.path(), &MemoryStore::new(), 61_000)
            .unwrap_err()
            .to_string();
        for want in ["has lost data", "it is empty now", "60 s ago", "delete"] {
            assert!(err.contains(want), "{want:?} missing in {err}");
        }
    }

    #[test]
    fn a_truncated_sled_log_is_refused() {
        // A small database has no snapshot: sled opens a truncated log as empty.
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        {
            let db = sled::open(&db_dir).unwrap();
            let store = SledStore::open(&db).unwrap();
            store.kv_put("k", b"v").unwrap();
            checkpoint(&db_dir, &store, 1).unwrap();
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(db_dir.join("db"))
            .unwrap()
            .set_len(0)
            .unwrap();
        let db = sled::open(&db_dir).expect("sled opens it as empty");
        let store = SledStore::open(&db).unwrap();
        let err = check(&db_dir, &store, 2).unwrap_err().to_string();
        assert!(err.contains("has lost data"), "{err}");
    }
}
