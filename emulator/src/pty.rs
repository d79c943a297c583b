//! What the serial device simulators share: a raw-mode pseudo-terminal served by its own thread,
//! and a control HTTP API on loopback, started and stopped together.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use axum::Router;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

/// Why a serial simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum PtyStartError {
    #[error(
        "control address {0} is not a loopback address; simulators listen on 127.0.0.1 or ::1 only"
    )]
    NotLoopback(SocketAddr),
    #[error("binding the control API on {addr} failed")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the pseudo-terminal failed")]
    Pty(#[source] std::io::Error),
    #[error("starting the pseudo-terminal thread failed")]
    Thread(#[source] std::io::Error),
}

/// A pseudo-terminal with the thread serving its master side, and the control API. Dropping
/// it tells both to stop; [`PtySimulator::shutdown`] also waits for them.
#[derive(Debug)]
pub(crate) struct PtySimulator {
    /// What is simulated, for log lines: `scale`, `scanner`.
    what: &'static str,
    pty_path: PathBuf,
    control_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pty_thread: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl PtySimulator {
    /// Binds the control API on `control` (loopback only; port 0 picks a free port), opens a
    /// pseudo-terminal, runs `serve` on a thread of its own with the master and slave sides and
    /// the stop flag, which it must look at every 50 ms or more often, and serves `app`. Must
    /// be called inside a tokio runtime.
    pub(crate) async fn start(
        what: &'static str,
        control: SocketAddr,
        app: Router,
        serve: impl FnOnce(OwnedFd, OwnedFd, &AtomicBool) + Send + 'static,
    ) -> Result<PtySimulator, PtyStartError> {
        if !control.ip().is_loopback() {
            return Err(PtyStartError::NotLoopback(control));
        }
        let bind_error = |source| PtyStartError::Bind {
            addr: control,
            source,
        };
        let listener = TcpListener::bind(control).await.map_err(bind_error)?;
        let control_addr = listener.local_addr().map_err(bind_error)?;
        let (master, slave, pty_path) = open_pty().map_err(PtyStartError::Pty)?;
        let stop = Arc::new(AtomicBool::new(false));
        let pty_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("{what}-pty"))
                .spawn(move || serve(master, slave, &stop))
                .map_err(PtyStartError::Thread)?
        };
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the {what} control API stopped");
            }
        });
        Ok(PtySimulator {
            what,
            pty_path,
            control_addr,
            stop,
            pty_thread: Some(pty_thread),
            shutdown,
            tasks,
        })
    }

    /// The pseudo-terminal DeviceHub opens, e.g. `/dev/pts/5`.
    pub(crate) fn pty_path(&self) -> &Path {
        &self.pty_path
    }

    /// The control API's address.
    pub(crate) fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Stops the control API and the pseudo-terminal thread and waits for both.
    pub(crate) async fn shutdown(mut self) {
        let what = self.what;
        let _ = self.shutdown.send(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "the {what} control task failed");
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.pty_thread.take() {
            // The thread wakes at least every 50 ms to look at the stop flag.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the {what} pseudo-terminal thread failed");
            }
        }
    }
}

impl Drop for PtySimulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }
}

/// Opens a pseudo-terminal pair with the slave side in raw mode, so that no line discipline
/// rewrites CR into LF or echoes answers back as commands; returns master, slave and the
/// slave's path.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes one descriptor into each of the two integers it is given; the
    // name, terminal settings and window size pointers may be null, and are.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are fresh descriptors nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: termios is plain data; tcgetattr fills it before it is read.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `slave` is an open terminal descriptor and `termios` a valid place to write.
    if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut termios) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: cfmakeraw only edits the structure it is given.
    unsafe { libc::cfmakeraw(&mut termios) };
    // SAFETY: as for tcgetattr; the structure was filled by tcgetattr.
    if unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 256];
    // SAFETY: the buffer is valid for its whole length, which is passed.
    let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ttyname_r succeeded, so the buffer holds a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok((
        master,
        slave,
        PathBuf::from(path.to_string_lossy().into_owned()),
    ))
}
