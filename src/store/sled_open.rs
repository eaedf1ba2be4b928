//! Opening the sled database with errors that say what happened.
//!
//! sled reports three different situations alike or not at all: another process holding the
//! directory (an `Io` error about a lock), damaged files (`Corruption`, or a panic inside
//! sled's recovery for some truncations), and files that are gone (an empty database, caught
//! by the marker in `marker.rs`). Operators get one message each, naming the directory and
//! the way out.

use std::path::Path;

/// Open (or create) the database in `dir`.
pub fn open_db(dir: &Path, cache_bytes: u64) -> anyhow::Result<sled::Db> {
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    // sled panics on some damaged files (an index out of bounds while reading segments):
    // turn that into the same clear refusal as a reported corruption. The default hook would
    // print a backtrace that reads like a kefu bug; keep it quiet for this one call.
    // (One opener at a time swaps the hook, or two could restore each other's quiet one.)
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let opened = {
        let _one = HOOK.lock().unwrap_or_else(|p| p.into_inner());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        std::panic::set_hook(previous);
        opened
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(explain(dir, &e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(damaged(dir, &format!("sled failed reading it: {what}")))
        }
    }
}

fn explain(dir: &Path, e: &sled::Error) -> anyhow::Error {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            anyhow::anyhow!(
                "server.data_dir: the database in {} is in use by another process (is another kefu running on it?)",
                dir.display()
            )
        }
        sled::Error::Corruption { .. } => damaged(dir, &e.to_string()),
        other => anyhow::anyhow!(
            "server.data_dir: cannot open the database in {}: {other}",
            dir.display()
        ),
    }
}

fn damaged(dir: &Path, detail: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "server.data_dir: the database in {dir} is damaged and cannot be read ({detail}). Its \
         files were truncated or overwritten (a full disk, a crash of the machine, a bad copy). \
         Restore {dir} from a backup; or move it away to start with an empty database",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `open_db`, waiting out the lock of a database just dropped in this process: sled's
    /// flusher thread lets go of it a moment after the last handle (seen on a loaded
    /// machine, where the damaged-files test was then told about "another kefu").
    fn reopen(dir: &Path) -> anyhow::Result<sled::Db> {
        let mut tries = 0;
        loop {
            match open_db(dir, 1 << 20) {
                Err(e) if e.to_string().contains("another kefu") && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn filled(dir: &Path) {
        {
            let db = open_db(dir, 1 << 20).unwrap();
            let t = db.open_tree("conversations").unwrap();
            for i in 0..20_000u32 {
                t.insert(i.to_be_bytes(), vec![7u8; 200]).unwrap();
            }
            db.flush().unwrap();
        }
        // Opened again, as a database in use is: sled's recovery writes a snapshot.
        drop(reopen(dir).unwrap());
        assert!(std::fs::read_dir(dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("snap.")));
    }

    #[test]
    fn a_second_opener_is_told_about_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open_db(dir.path(), 1 << 20).unwrap();
        let err = open_db(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("is another kefu running on it?"), "{err}");
    }

    #[test]
    fn damaged_files_are_called_damaged_not_locked() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path());
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(10)
                    .unwrap();
            }
        }
        let err = reopen(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
        assert!(!err.contains("another kefu"), "{err}");
    }

    #[test]
    fn a_missing_log_beside_a_snapshot_is_called_damaged_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path());
        std::fs::remove_file(dir.path().join("db")).unwrap();
        let err = reopen(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
    }
}
