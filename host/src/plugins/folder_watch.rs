//! Rescans the plugins folder when its content changes, so that a driver dropped into the
//! folder of a running DeviceHub is picked up without a restart.
//!
//! The folder's listing (file names, sizes and modification times) is read every
//! [`POLL_INTERVAL`] on a blocking task. A rescan starts only once a changed listing stayed the
//! same over two polls in a row, so that a file still being copied is not opened half-written;
//! the rescan's signature and hash checks refuse anything that is incomplete anyway. Polling
//! was chosen over file-system notifications because it behaves the same on every platform
//! and on network folders, and costs one directory listing every two seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;

/// How often the folder is listed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One file of the listing: name, size, modification time.
type Entry = (String, u64, Option<SystemTime>);

/// The running folder watch.
#[derive(Debug)]
pub struct FolderWatch {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl FolderWatch {
    /// Watches the folder of the agent's plugin set until [`FolderWatch::stop`] or `shutdown`.
    pub fn start(agent: Arc<Agent>, shutdown: &CancellationToken) -> FolderWatch {
        let stop = shutdown.child_token();
        let task = tokio::spawn(watch(agent, stop.clone()));
        FolderWatch { stop, task }
    }

    /// Stops watching and waits for a rescan in progress to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!("the plugins folder watch failed: {e}");
        }
    }
}

async fn watch(agent: Arc<Agent>, stop: CancellationToken) {
    let dir = agent.plugins().dir.clone();
    // What the folder held when the plugins were loaded is what the agent has seen.
    let Some(mut scanned) = list_blocking(dir.clone()).await else {
        return;
    };
    let mut previous = scanned.clone();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = poll.tick() => {}
        }
        let Some(now) = list_blocking(dir.clone()).await else {
            return;
        };
        if now == previous && now != scanned {
            tracing::info!(dir = %dir.display(), "the plugins folder changed; rescanning");
            agent.rescan_plugins().await;
            scanned = now.clone();
        }
        previous = now;
    }
}

async fn list_blocking(dir: PathBuf) -> Option<Vec<Entry>> {
    match tokio::task::spawn_blocking(move || listing(&dir)).await {
        Ok(entries) => Some(entries),
        Err(e) => {
            tracing::error!("listing the plugins folder failed: {e}");
            None
        }
    }
}

/// The folder's files, sorted; a folder that cannot be read lists as empty (the rescan
/// reports why).
fn listing(dir: &Path) -> Vec<Entry> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<Entry> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().ok(),
                )
            })
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_changes_with_names_and_sizes() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(listing(dir.path()).is_empty());
        std::fs::write(dir.path().join("a.so"), b"1").expect("write");
        let one = listing(dir.path());
        assert_eq!(one.len(), 1);
        std::fs::write(dir.path().join("a.so"), b"12").expect("write");
        let two = listing(dir.path());
        assert_ne!(one, two, "a size change is a change");
        assert!(listing(&dir.path().join("missing")).is_empty());
    }
}
