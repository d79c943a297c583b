//! How every simulator command stops: on SIGINT, SIGTERM, or the end of standard input, so that
//! a test that spawns a simulator can never leak it.

use std::io::BufRead;

/// Resolves on SIGINT, SIGTERM, or the end of standard input (unless ignored).
pub async fn wait_for_stop(ignore_stdin: bool) -> std::io::Result<()> {
    let (stdin_closed_tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    if !ignore_stdin {
        // Reading stdin blocks, so it gets its own thread. The thread is not joined: it may be
        // blocked in read() when a signal ends the process, and process exit ends it.
        std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                let mut sink = Vec::new();
                let mut stdin = std::io::stdin().lock();
                loop {
                    sink.clear();
                    match stdin.read_until(b'\n', &mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = stdin_closed_tx.send(());
            })?;
    }
    let stdin_watch = async move {
        if ignore_stdin {
            std::future::pending::<()>().await;
        } else {
            let _ = stdin_closed.await;
        }
    };
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, stopping"),
            () = stdin_watch => tracing::info!("standard input closed, stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, stopping"),
            () = stdin_watch => tracing::info!("standard input closed, stopping"),
        }
    }
    Ok(())
}
