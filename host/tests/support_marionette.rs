//! A small client for Marionette, the remote protocol built into Firefox, so that the browser
//! tests can drive headless Firefox without geckodriver.
//!
//! Firefox started with `-marionette` listens on 127.0.0.1 at the port named by the profile's
//! `marionette.port` preference; with `0` it picks a free port and writes it to
//! `MarionetteActivePort` in the profile folder. Every message on the connection is
//! `LENGTH:JSON`, LENGTH being the JSON's size in bytes. Firefox first sends
//! `{"applicationType": "gecko", "marionetteProtocol": 3}`; after that each command is
//! `[0, id, "WebDriver:Name", {parameters}]` and its answer `[1, id, error, result]`, where
//! `error` is `null` or a W3C WebDriver error object. The commands mirror W3C WebDriver's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest Firefox may take to start, and any one command to answer; a passing test never
/// waits this long.
const WAIT: Duration = Duration::from_secs(60);
/// The Marionette protocol version this client speaks.
const PROTOCOL: u64 = 3;
/// The largest answer accepted: a full-window screenshot in base64 is a few megabytes, so
/// anything far larger means the stream is out of step.
const LARGEST_ANSWER: usize = 256 * 1024 * 1024;
/// Preferences for a fresh test profile: Marionette on a port Firefox picks, pixels that are
/// CSS pixels (as Chromium's `--force-device-scale-factor=1`), and no first-run pages.
const USER_JS: &str = r#"user_pref("marionette.port", 0);
user_pref("layout.css.devPixelsPerPx", "1.0");
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("datareporting.policy.dataSubmissionEnabled", false);
"#;

/// Headless Firefox with a Marionette session, in its own throwaway profile; Firefox quits
/// when this is dropped.
pub struct Marionette {
    firefox: Child,
    /// The connection, behind a lock because each command is one request and its answer.
    connection: tokio::sync::Mutex<Connection>,
    /// The profile folder outlives Firefox: it is removed after the process has ended.
    _profile: tempfile::TempDir,
}

/// The Marionette connection and the next command ID.
struct Connection {
    stream: BufReader<TcpStream>,
    next_id: u64,
}

impl Connection {
    /// Reads one `LENGTH:JSON` message.
    async fn read_message(&mut self) -> Value {
        let mut length = Vec::new();
        self.stream
            .read_until(b':', &mut length)
            .await
            .expect("read a Marionette message length");
        assert_eq!(length.pop(), Some(b':'), "Marionette closed the connection");
        let length: usize = std::str::from_utf8(&length)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("not a Marionette message length: {length:?}"));
        assert!(
            length <= LARGEST_ANSWER,
            "a Marionette message of {length} bytes"
        );
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .await
            .expect("read a Marionette message");
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "a Marionette message that is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// Sends one command and returns its result, or the WebDriver error object as `Err`.
    async fn command(&mut self, name: &str, parameters: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::to_vec(&json!([0, id, name, parameters]))
            .expect("a JSON value always serializes");
        let mut message = format!("{}:", body.len()).into_bytes();
        message.extend_from_slice(&body);
        self.stream
            .get_mut()
            .write_all(&message)
            .await
            .unwrap_or_else(|e| panic!("send {name} to Marionette: {e}"));
        let answer = tokio::time::timeout(WAIT, self.read_message())
            .await
            .unwrap_or_else(|_| panic!("Marionette never answered {name}"));
        let answer = answer
            .as_array()
            .filter(|parts| parts.len() == 4 && parts[0] == 1)
            .unwrap_or_else(|| panic!("not a Marionette answer to {name}: {answer}"));
        assert_eq!(answer[1], id, "the answer to {name} is for another command");
        if answer[2].is_null() {
            Ok(answer[3].clone())
        } else {
            Err(answer[2].clone())
        }
    }
}

impl Marionette {
    /// Starts headless Firefox (`FIREFOX`, or Debian's `firefox-esr`) in a fresh profile and opens
    /// a session.
    pub async fn start() -> Marionette {
        let profile = tempfile::tempdir().expect("browser profile folder");
        std::fs::write(profile.path().join("user.js"), USER_JS).expect("write user.js");
        let binary = firefox_binary();
        let mut firefox = Command::new(&binary)
            // System access lets the tests set the page zoom, which only the browser's own
            // (chrome) scripts can do.
            .args([
                "-headless",
                "-marionette",
                "-remote-allow-system-access",
                "-no-remote",
                "-profile",
            ])
            .arg(profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): install firefox-esr (scripts/install-deps test does)")
            });
        let port = active_port(&mut firefox, profile.path()).await;
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("Marionette accepts the connection in time")
            .unwrap_or_else(|e| panic!("connect to Marionette on port {port}: {e}"));
        let mut connection = Connection {
            stream: BufReader::new(stream),
            next_id: 1,
        };
        let hello = tokio::time::timeout(WAIT, connection.read_message())
            .await
            .expect("Marionette says hello in time");
        assert_eq!(
            hello["marionetteProtocol"], PROTOCOL,
            "a Marionette protocol this client does not speak: {hello}"
        );
        let session = connection
            .command(
                "WebDriver:NewSession",
                json!({ "capabilities": { "alwaysMatch": { "browserName": "firefox" } } }),
            )
            .await
            .unwrap_or_else(|e| panic!("no Firefox session: {e}"));
        assert!(session["sessionId"].is_string(), "no session: {session}");
        Marionette {
            firefox,
            connection: tokio::sync::Mutex::new(connection),
            _profile: profile,
        }
    }

    /// One WebDriver command; returns the result's `value` (or the whole result when it is an
    /// object without one), panicking on a WebDriver error.
    pub async fn command(&self, name: &str, parameters: Value) -> Value {
        let result = self.try_command(name, parameters.clone()).await;
        result.unwrap_or_else(|error| panic!("Marionette {name} {parameters} failed: {error}"))
    }

    /// Sets the page zoom of the current tab, as a person does with Ctrl and +: `2.0` is 200%.
    /// The zoom belongs to the browser, not the page, so the script runs in the browser's own
    /// (chrome) context and the context is then put back.
    pub async fn set_page_zoom(&self, zoom: f64) {
        self.command("Marionette:SetContext", json!({ "value": "chrome" }))
            .await;
        let set = self
            .try_command(
                "WebDriver:ExecuteScript",
                json!({
                    "script": "ZoomManager.setZoomForBrowser(gBrowser.selectedBrowser, arguments[0]); \
                               return ZoomManager.getZoomForBrowser(gBrowser.selectedBrowser);",
                    "args": [zoom],
                }),
            )
            .await;
        self.command("Marionette:SetContext", json!({ "value": "content" }))
            .await;
        let set = set.unwrap_or_else(|e| panic!("set the page zoom to {zoom}: {e}"));
        assert_eq!(set.as_f64(), Some(zoom), "the page zoom set");
    }

    /// One WebDriver command; the WebDriver error object is `Err`.
    pub async fn try_command(&self, name: &str, parameters: Value) -> Result<Value, Value> {
        let result = self
            .connection
            .lock()
            .await
            .command(name, parameters)
            .await?;
        // Marionette wraps results that are not objects (strings, element references) in
        // `{"value": ...}`, as W3C WebDriver does, and sends objects as they are.
        Ok(match result.get("value") {
            Some(value) => value.clone(),
            None => result,
        })
    }
}

impl Drop for Marionette {
    fn drop(&mut self) {
        // Quitting through Marionette lets Firefox end its content processes; killing only the
        // main process would leave them behind. Drop cannot await, so the request is written on
        // this worker thread; that needs the multi-threaded runtime, and on any other Firefox
        // is only killed below. Only the request is sent, and any failure ignored: Firefox may
        // close the connection without answering, and a panic here would abort a test that is
        // already failing.
        let connection = self.connection.get_mut();
        let body = json!([0, connection.next_id, "Marionette:Quit", { "flags": ["eForceQuit"] }]);
        let message = format!("{}:{body}", body.to_string().len());
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|r| r.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if let Some(runtime) = runtime {
            tokio::task::block_in_place(|| {
                runtime.block_on(async {
                    let send = connection.stream.get_mut().write_all(message.as_bytes());
                    let _ = tokio::time::timeout(Duration::from_secs(10), send).await;
                })
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.firefox.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.firefox.kill();
        let _ = self.firefox.wait();
    }
}

/// Waits for Firefox to write the port it picked into the profile folder.
async fn active_port(firefox: &mut Child, profile: &Path) -> u16 {
    let file = profile.join("MarionetteActivePort");
    let deadline = Instant::now() + WAIT;
    loop {
        // The file can be seen before its content is written: read it until it holds a port.
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .filter(|port| *port != 0)
        {
            return port;
        }
        if let Ok(Some(exit)) = firefox.try_wait() {
            panic!("Firefox ended ({exit}) before Marionette listened");
        }
        assert!(
            Instant::now() < deadline,
            "Firefox never wrote {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Debian's Firefox ESR, or the one `FIREFOX` names.
fn firefox_binary() -> String {
    std::env::var("FIREFOX").unwrap_or_else(|_| {
        ["/usr/bin/firefox-esr", "/usr/bin/firefox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("no Firefox found: install firefox-esr (scripts/install-deps test does)")
            })
            .to_string()
    })
}
