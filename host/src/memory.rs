//! Handing memory back to the system when the agent goes quiet.
//!
//! DeviceHub runs all day on a desk's PC and is idle most of it. Two kinds of memory stay
//! resident after busy moments although nothing needs them:
//!
//! - **Code and read-only data that start-up ran through once**: parsing arguments and the
//!   config, verifying and loading plugins, the TLS handshake, binding the local servers. The
//!   kernel maps a file's pages in 64 KiB runs around each fault, so start-up leaves most of the
//!   program's machine code resident. [`release`] drops the process's mappings of its own and
//!   its libraries' read-only segments (`madvise(MADV_DONTNEED)`); the pages stay in the page
//!   cache, so the code the agent runs afterwards comes back on a minor fault, without a disk
//!   read. Writable segments, including the relocated read-only ones (`PT_GNU_RELRO`), are
//!   never touched: dropping them would lose their contents.
//! - **Freed heap**: rendering a label allocates megabytes that the allocator keeps in its
//!   per-thread arenas once freed. [`release`] asks glibc to return free pages
//!   (`malloc_trim(0)`).
//!
//! [`Quiet`] runs [`release`] once the agent has been quiet for [`QUIET`]: after start-up
//! settles, and after each run of jobs. [`configure_allocator`] keeps the allocator from
//! spreading freed memory over many arenas in the first place. Only Linux with glibc has these
//! calls; elsewhere they do nothing and say so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long without activity before memory is released. Long enough that a run of jobs a few
/// seconds apart keeps its warm code and buffers; short enough that an idle desk is lean within
/// seconds.
pub const QUIET: Duration = Duration::from_secs(5);

/// What one [`release`] handed back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Read-only segments of loaded objects whose mappings were dropped.
    pub segments: usize,
    /// Bytes those segments span (resident or not).
    pub segment_bytes: usize,
    /// Whether the allocator returned memory to the system.
    pub heap_trimmed: bool,
}

/// Drops the process's mappings of read-only code and data and returns free heap to the
/// system. Safe to call at any time from any thread: the dropped pages fault back in from the
/// page cache when they are used again.
pub fn release() -> Released {
    imp::release()
}

/// The most malloc arenas the agent's threads share; see [`configure_allocator`].
pub const MAX_ARENAS: i32 = 2;

/// Tunes the allocator for a long-running, mostly idle service; call it first thing, before
/// threads start. glibc gives a thread that finds the arenas busy an arena of its own, up to
/// eight per core, and never frees one: a run of jobs rendered on the blocking threads left a
/// dozen arenas holding about a megabyte each. DeviceHub allocates little besides a job's few
/// large buffers, so [`MAX_ARENAS`] arenas serve it without contention worth measuring.
/// Returns whether the setting took (always `false` off glibc).
pub fn configure_allocator() -> bool {
    imp::configure_allocator()
}

/// Calls [`release`] whenever the agent has been quiet for [`QUIET`] after activity.
#[derive(Debug, Clone, Default)]
pub struct Quiet {
    activity: Arc<Notify>,
    releases: Arc<AtomicUsize>,
}

impl Quiet {
    /// Notes activity (a job ended, the link connected): the release waits for [`QUIET`] after
    /// the last one.
    pub fn poke(&self) {
        self.activity.notify_one();
    }

    /// How many times memory was released so far.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::Relaxed)
    }

    /// Waits for activity, then for [`QUIET`] without any, releases memory on a blocking thread,
    /// and starts over; until `shutdown`. Counts the start as activity.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_with(QUIET, shutdown).await;
    }

    async fn run_with(self, quiet: Duration, shutdown: CancellationToken) {
        self.poke();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.activity.notified() => {}
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.activity.notified() => continue,
                    _ = tokio::time::sleep(quiet) => break,
                }
            }
            let outcome = tokio::task::spawn_blocking(release).await;
            self.releases.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(released) => tracing::debug!(
                    segments = released.segments,
                    segment_kib = released.segment_bytes / 1024,
                    heap_trimmed = released.heap_trimmed,
                    "memory released while quiet"
                ),
                Err(e) => tracing::warn!("releasing memory failed: {e}"),
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::Released;
    use std::ffi::{c_int, c_void, CStr};

    pub fn configure_allocator() -> bool {
        // SAFETY: mallopt takes no pointers; M_ARENA_MAX may be set at any time.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, super::MAX_ARENAS) == 1 }
    }

    pub fn release() -> Released {
        let mut released = Released::default();
        // SAFETY: the callback only reads the program headers the loader hands it, for the
        // duration of the call, and writes through `data`, which points at `released` and
        // outlives the call.
        unsafe {
            libc::dl_iterate_phdr(
                Some(drop_read_only_segments),
                (&mut released as *mut Released).cast::<c_void>(),
            );
        }
        // SAFETY: malloc_trim takes no pointers and may be called from any thread.
        released.heap_trimmed = unsafe { libc::malloc_trim(0) } == 1;
        released
    }

    /// `dl_iterate_phdr`'s callback: drops the mappings of the object's read-only `PT_LOAD`
    /// segments, shrunk to whole pages that lie inside them and outside its `PT_GNU_RELRO`
    /// range.
    unsafe extern "C" fn drop_read_only_segments(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the call, and
        // `data` is the `Released` that `release` passed.
        let (info, released) = unsafe { (&*info, &mut *data.cast::<Released>()) };
        if !info.dlpi_name.is_null() {
            // SAFETY: a non-null name is a NUL-terminated string owned by the loader.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) };
            // The vDSO is the kernel's, mapped specially: leave it alone.
            if name.to_bytes().starts_with(b"linux-vdso")
                || name.to_bytes().starts_with(b"linux-gate")
            {
                return 0;
            }
        }
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        let relro = headers
            .iter()
            .find(|h| h.p_type == libc::PT_GNU_RELRO)
            .map(|h| {
                let start = base + h.p_vaddr as usize;
                (start, start + h.p_memsz as usize)
            });
        let page = page_size();
        for header in headers {
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = base + header.p_vaddr as usize;
            let end = start + header.p_memsz as usize;
            if relro.is_some_and(|(r_start, r_end)| start < r_end && r_start < end) {
                continue;
            }
            let (first, last) = (start.next_multiple_of(page), end / page * page);
            if first >= last {
                continue;
            }
            // SAFETY: the range is whole pages of a read-only, private file mapping of this
            // process (a non-writable PT_LOAD segment outside RELRO, so never written after
            // loading); dropping it only makes the next access fault the same bytes back in
            // from the file.
            let result =
                unsafe { libc::madvise(first as *mut c_void, last - first, libc::MADV_DONTNEED) };
            if result == 0 {
                released.segments += 1;
                released.segment_bytes += last - first;
            }
        }
        0
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::Released;

    /// Elsewhere the system trims idle processes on its own terms; nothing is released here.
    pub fn release() -> Released {
        Released::default()
    }

    /// Other allocators size their pools on their own.
    pub fn configure_allocator() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read-only data for the tests to read: 2 MiB in the test binary's read-only segment.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    static TABLE: [u64; 1 << 18] = {
        let mut table = [0u64; 1 << 18];
        let mut i = 0;
        while i < table.len() {
            table[i] = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            i += 1;
        }
        table
    };

    /// The tests that release memory run one at a time, so that one's release does not empty
    /// the pages another has just made resident.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    static RELEASING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn checksum() -> u64 {
        std::hint::black_box(&TABLE)
            .iter()
            .fold(0u64, |sum, &v| sum.wrapping_mul(31).wrapping_add(v))
    }

    /// Code keeps running, and read-only data keeps its contents, after its mappings are
    /// dropped: both fault back in from the file.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn releasing_keeps_code_and_constants_intact() {
        let _one_at_a_time = RELEASING.lock().unwrap_or_else(|e| e.into_inner());
        let before = checksum();
        let released = release();
        assert!(released.segments > 0, "{released:?}");
        assert!(
            released.segment_bytes >= size_of_val(&TABLE),
            "{released:?}"
        );
        assert_eq!(before, checksum());
        // Heap data, relocated pointers and formatting machinery all still work.
        let text = format!("{:?}", vec![String::from("still"), String::from("here")]);
        assert_eq!(text, r#"["still", "here"]"#);
    }

    /// Resident memory goes down by at least the read-only data that was resident.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn releasing_lowers_the_resident_file_pages() {
        fn resident_file_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .expect("RssFile in /proc/self/status")
        }
        let _one_at_a_time = RELEASING.lock().unwrap_or_else(|e| e.into_inner());
        checksum();
        let before = resident_file_kib();
        release();
        let after = resident_file_kib();
        // Other tests may fault some code in meanwhile; the table alone is 2048 KiB.
        assert!(
            after + 1024 <= before,
            "file pages resident: {before} KiB before, {after} KiB after"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_releases_once_quiet_and_not_while_busy() {
        let quiet = Quiet::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            quiet
                .clone()
                .run_with(Duration::from_secs(5), shutdown.clone()),
        );
        // Activity every second keeps the release away.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            quiet.poke();
        }
        assert_eq!(quiet.releases(), 0);
        // Five quiet seconds later it happens, once.
        wait_for_releases(&quiet, 1).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            quiet.releases(),
            1,
            "nothing happened since: no new release"
        );
        // New activity: released again once quiet, not before.
        quiet.poke();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(quiet.releases(), 1);
        wait_for_releases(&quiet, 2).await;
        shutdown.cancel();
        task.await.expect("the quiet task ends on shutdown");
    }

    /// Waits, on the paused clock, until `count` releases happened; at most a minute.
    async fn wait_for_releases(quiet: &Quiet, count: usize) {
        for _ in 0..600 {
            if quiet.releases() >= count {
                assert_eq!(quiet.releases(), count);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} releases, expected {count}", quiet.releases());
    }
}
