//! Printer simulators: each listens on TCP like a network printer, decodes the printer language
//! it receives back into a bitmap, and answers status queries the way the real printer does.
//!
//! # Layout
//! - [`bitmap`]: the 1-bit label image every simulator decodes into (bit 1 = black).
//! - [`store`]: one printer's shared state: faults, printed and held labels, errors, counters.
//! - [`control`]: the control HTTP API over that state (status, labels, PNG, bits, faults).
//! - [`zebra`]: the Zebra ZPL II / EPL2 simulator.
//! - [`tspl`]: the TSPL/TSPL2 simulator (TSC and compatible 4x6 printers).
//! - [`brother`]: the Brother QL raster simulator.
//! - [`dymo`]: the DYMO LabelWriter simulator (450 series raster and 550 series).
//! - [`escpos`]: the ESC/POS raster simulator (an Epson TM-L100).
//! - [`cli`]: the `devicehub-emulator printer ...` subcommand.
//!
//! This file holds what every family shares: the print-port server that feeds a
//! [`PrintStreamDecoder`] and writes its replies back, the control server, the PNG writer, and
//! [`RunningPrinter`], the handle a caller keeps to reach and stop a started simulator. A new
//! family (DYMO, Brother QL, TSPL) adds a decoder and a `start` function that calls
//! [`start_printer`].

pub mod bitmap;
pub mod brother;
pub mod cli;
pub mod control;
pub mod dymo;
pub mod escpos;
pub mod store;
pub mod tspl;
pub mod zebra;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use bitmap::Bitmap;
pub use store::{
    Counters, DecodedLabel, ErrorKind, ErrorRecord, Faults, LabelRecord, PrinterInfo, PrinterState,
    StatusReport,
};

/// Why starting a printer simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A server address is not a loopback address: simulators never listen on a network.
    #[error("{role} address {addr} is not a loopback address; simulators listen on 127.0.0.1 or ::1 only")]
    NotLoopback {
        /// Which server: `print` or `control`.
        role: &'static str,
        /// The address refused.
        addr: SocketAddr,
    },
    /// Binding a listener failed.
    #[error("binding the {role} port on {addr} failed")]
    Bind {
        /// Which server: `print` or `control`.
        role: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The output directory for PNGs could not be created.
    #[error("creating the label output directory {path} failed")]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The PNG writer thread could not be started.
    #[error("starting the label PNG writer thread failed")]
    WriterThread(#[source] std::io::Error),
    /// The configuration is not usable.
    #[error("invalid printer configuration: {0}")]
    Config(String),
}

/// Why the bytes of a connection stopped coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The peer closed the connection (or it failed).
    Closed,
    /// The simulator closed it on purpose (`drop_after_bytes`).
    Dropped,
    /// The simulator is shutting down.
    Shutdown,
}

/// A printer language decoder: one per connection, fed the bytes in arrival order, split
/// wherever TCP split them.
pub trait PrintStreamDecoder: Send + 'static {
    /// Decodes the next bytes. Completed labels and errors go to `printer`; answers to status
    /// queries are appended to `reply`, which the server writes back before reading on.
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>);

    /// The stream ended: a job still in progress is incomplete.
    fn finish(&mut self, printer: &PrinterState, end: StreamEnd);
}

/// Builds a fresh decoder for each print-port connection.
pub type DecoderFactory = Arc<dyn Fn() -> Box<dyn PrintStreamDecoder> + Send + Sync>;

/// Where and how a printer simulator serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The print port's address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The control API's address (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
}

/// A started printer simulator. Dropping it stops its servers; [`RunningPrinter::shutdown`]
/// also waits until they have stopped and every queued PNG is written.
#[derive(Debug)]
pub struct RunningPrinter {
    print_addr: SocketAddr,
    control_addr: SocketAddr,
    state: Arc<PrinterState>,
    shutdown: watch::Sender<bool>,
    /// The print-port and control servers; each stops when `shutdown` says so.
    tasks: JoinSet<()>,
    /// Writes PNGs to the output directory off the async workers.
    png_writer: Option<thread::JoinHandle<()>>,
}

impl RunningPrinter {
    /// The bound print port.
    pub fn print_addr(&self) -> SocketAddr {
        self.print_addr
    }

    /// The bound control API address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The control API's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// The printer's state: labels, errors, faults.
    pub fn state(&self) -> &Arc<PrinterState> {
        &self.state
    }

    /// Stops both servers, closes open print connections and waits for the PNG writer.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a printer server task failed");
            }
        }
        self.state.close_png_writer();
        if let Some(writer) = self.png_writer.take() {
            // Joining a thread blocks; it only has queued files left to write.
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the label PNG writer thread failed");
            }
        }
    }
}

impl Drop for RunningPrinter {
    fn drop(&mut self) {
        // Tell the servers to stop and let the writer end after its queue; `JoinSet` aborts
        // whatever is left when it is dropped.
        let _ = self.shutdown.send(true);
        self.state.close_png_writer();
    }
}

fn require_loopback(role: &'static str, addr: SocketAddr) -> Result<(), StartError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(StartError::NotLoopback { role, addr })
    }
}

/// Starts a printer simulator: binds the print port and the control API, and serves until the
/// returned handle is shut down or dropped. Must be called inside a tokio runtime.
pub async fn start_printer(
    info: PrinterInfo,
    config: ServerConfig,
    decoders: DecoderFactory,
) -> Result<RunningPrinter, StartError> {
    require_loopback("print", config.listen)?;
    require_loopback("control", config.control)?;
    let print_listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                role: "print",
                addr: config.listen,
                source,
            })?;
    let control_listener =
        TcpListener::bind(config.control)
            .await
            .map_err(|source| StartError::Bind {
                role: "control",
                addr: config.control,
                source,
            })?;
    let local = |listener: &TcpListener, role: &'static str, addr: SocketAddr| {
        listener
            .local_addr()
            .map_err(|source| StartError::Bind { role, addr, source })
    };
    let print_addr = local(&print_listener, "print", config.listen)?;
    let control_addr = local(&control_listener, "control", config.control)?;

    let (png_sender, png_writer) = match &config.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::OutDir {
                path: dir.clone(),
                source,
            })?;
            let (sender, receiver) = mpsc::channel::<store::PngJob>();
            let writer = thread::Builder::new()
                .name("label-png-writer".into())
                .spawn(move || write_pngs(receiver))
                .map_err(StartError::WriterThread)?;
            (Some(sender), Some(writer))
        }
        None => (None, None),
    };

    let state = Arc::new(PrinterState::new(info, config.out_dir.clone(), png_sender));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_print_port(
        print_listener,
        Arc::clone(&state),
        decoders,
        shutdown_rx.clone(),
    ));
    let app = control::router(Arc::clone(&state));
    let mut control_shutdown = shutdown_rx;
    tasks.spawn(async move {
        let served = axum::serve(control_listener, app)
            .with_graceful_shutdown(async move { wait_for_shutdown(&mut control_shutdown).await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the printer control API stopped");
        }
    });
    tracing::info!(%print_addr, %control_addr, "printer simulator started");
    Ok(RunningPrinter {
        print_addr,
        control_addr,
        state,
        shutdown,
        tasks,
        png_writer,
    })
}

/// Resolves once shutdown is asked for, or when the handle that could ask is gone.
async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can keep the server, so it stops too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn serve_print_port(
    listener: TcpListener,
    state: Arc<PrinterState>,
    decoders: DecoderFactory,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = wait_for_shutdown(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "print connection accepted");
                    state.note_connection();
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&state),
                        decoders(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    // Accept errors (e.g. too many open files) are transient for a listener
                    // that stays bound; log and keep serving.
                    tracing::warn!(%error, "accepting a print connection failed");
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "a print connection task failed");
                }
            }
        }
    }
    // Each connection also watches the shutdown signal and finishes its decoder; wait for them.
    while let Some(joined) = connections.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "a print connection task failed");
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    state: Arc<PrinterState>,
    mut decoder: Box<dyn PrintStreamDecoder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut reply = Vec::new();
    let end = loop {
        let read = tokio::select! {
            () = wait_for_shutdown(&mut shutdown) => break StreamEnd::Shutdown,
            read = stream.read(&mut buffer) => read,
        };
        let received = match read {
            Ok(0) => break StreamEnd::Closed,
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "print connection failed");
                break StreamEnd::Closed;
            }
        };
        let budget = state.budget_read(received);
        decoder.feed(&buffer[..budget.accept], &state, &mut reply);
        if !reply.is_empty() {
            // A host that never reads its answers must not keep the simulator from stopping.
            let written = tokio::select! {
                () = wait_for_shutdown(&mut shutdown) => break StreamEnd::Shutdown,
                written = stream.write_all(&reply) => written,
            };
            reply.clear();
            if let Err(error) = written {
                tracing::debug!(%error, "writing a status answer failed");
                break StreamEnd::Closed;
            }
        }
        if budget.drop_connection {
            tracing::info!("dropping the print connection as the injected fault asks");
            break StreamEnd::Dropped;
        }
    };
    decoder.finish(&state, end);
    if end == StreamEnd::Dropped {
        // Zero linger makes the close a reset, as when a printer loses power or its network
        // link mid-job: the sender sees the connection fail instead of a tidy end of stream.
        if let Err(error) = stream.set_zero_linger() {
            tracing::debug!(%error, "setting zero linger failed");
        }
    }
    drop(stream);
}

/// The PNG writer thread: writes each queued label until the queue is closed.
fn write_pngs(queue: mpsc::Receiver<store::PngJob>) {
    for job in queue {
        let written = job
            .bitmap
            .to_png()
            .map_err(std::io::Error::other)
            .and_then(|png| write_atomically(&job.path, &png));
        match written {
            Ok(()) => tracing::debug!(path = %job.path.display(), "label PNG written"),
            Err(error) => {
                tracing::warn!(path = %job.path.display(), %error, "writing a label PNG failed")
            }
        }
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// temporary file in the same directory, fsync, rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
