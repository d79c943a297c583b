//! Plugin loading benchmark: the time `PluginSet::load_dir` takes for the default plugin
//! bundle (every `devicehub_driver_*` library built beside this benchmark, signed with a
//! throwaway key the loader trusts), from verifying the bundle's signature and every file's
//! SHA-256 through header checks, `dlopen`, the layout check and reading every manifest.
//!
//! Each round loads fresh copies under new names, because the dynamic loader hands back an
//! already-loaded library without reading it again. Prints min, median and max.
//!
//! Run with `cargo bench -p devicehub --bench plugin_load`.

use std::time::{Duration, Instant};

use devicehub::plugins::{PluginSet, Selection};

#[allow(dead_code)]
#[path = "../tests/support.rs"]
mod support;

const ROUNDS: usize = 25;

fn main() {
    let deps = std::env::current_exe()
        .expect("bench path")
        .parent()
        .expect("bench folder")
        .to_path_buf();
    let drivers: Vec<_> = std::fs::read_dir(&deps)
        .expect("read the build folder")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.contains("devicehub_driver_") && n.ends_with(std::env::consts::DLL_SUFFIX)
            })
        })
        .collect();
    assert!(
        !drivers.is_empty(),
        "no driver libraries in {}",
        deps.display()
    );
    let total_bytes: u64 = drivers
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut copies = Vec::new();
        for path in &drivers {
            let name = path.file_name().expect("file name").to_string_lossy();
            let copy = dir.path().join(format!("r{round}-{name}"));
            std::fs::copy(path, &copy).expect("copy");
            copies.push(copy);
        }
        support::sign_files(
            dir.path(),
            &copies,
            &support::test_key(),
            "default.bundle.json",
        );
        let trust = support::test_trust();
        let start = Instant::now();
        let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &trust);
        times.push(start.elapsed());
        assert_eq!(
            set.plugins.len(),
            drivers.len(),
            "refused: {:?}",
            set.refused
        );
    }
    times.sort();
    println!(
        "plugin_load: {} plugin(s), {} KiB in all, {ROUNDS} rounds: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        drivers.len(),
        total_bytes / 1024,
        ms(times[0]),
        ms(times[ROUNDS / 2]),
        ms(times[ROUNDS - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
