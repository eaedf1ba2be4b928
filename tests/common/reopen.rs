//! Opening a database again in the same test process, after a run that used it.

use std::time::{Duration, Instant};

/// The database at `path` once the previous run has let go of it: a run's runtime is shut
/// down with a timeout, and a blocking task still finishing on a loaded machine holds its
/// handle (and sled's file lock) a little longer. A real restart is a new process.
pub fn open_when_free(path: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{} still locked after 60 s: {e}", path.display()),
        }
    }
}
