//! The registration and status pages of `devicehub run` over the real wire: the security
//! checks (foreign Host and Origin, CSRF, loopback only), registration through the API against
//! the emulator cloud, and headless Chromium and Firefox walking the pages as a person at the
//! desk would.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{self, http_client, Simulator, ZEBRA};
use crate::support_cloud::Cloud;
use crate::support_desk::{self, zebra_row, Agent, Prepared};
use crate::support_marionette::Marionette;

/// The longest a test waits for the agent to start, register or connect; a passing test never
/// waits this long.
const WAIT: Duration = Duration::from_secs(60);
/// The device ID of the simulated printer in the desk's config.
const PRINTER: &str = "zebra-1";
/// A code the emulator never issued.
const WRONG_CODE: &str = "WRONG-CODE-0000";

/// An unregistered desk: the cloud, a Zebra simulator, and `devicehub run` waiting for
/// registration with its pages on a free port.
struct Desk {
    _cloud: Cloud,
    _sim: Simulator,
    _plugins: tempfile::TempDir,
    prepared: Prepared,
    agent: Agent,
    port: u16,
    http: reqwest::Client,
}

impl Desk {
    async fn start() -> Desk {
        let cloud = Cloud::start();
        let sim = Simulator::zebra(&["--language", "zpl"]);
        let plugins = support::plugins_folder(&[ZEBRA]);
        let prepared = support_desk::prepare(
            &cloud,
            plugins.path(),
            &zebra_row(PRINTER, &sim.print_addr, ""),
        );
        let mut agent = Agent::start(
            &prepared.config,
            &prepared
                .config
                .parent()
                .expect("the desk folder")
                .join("run.log"),
        );
        let port = pages_port(&mut agent).await;
        Desk {
            _cloud: cloud,
            _sim: sim,
            _plugins: plugins,
            prepared,
            agent,
            port,
            http: http_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The CSRF token from the registration page's `<meta>` tag.
    async fn csrf_token(&self) -> String {
        let page = self.get_text("/register").await;
        let start = page
            .find("name=\"csrf-token\" content=\"")
            .unwrap_or_else(|| panic!("no CSRF meta tag in:\n{page}"))
            + "name=\"csrf-token\" content=\"".len();
        let end = page[start..].find('"').expect("end of the token") + start;
        page[start..end].to_string()
    }

    async fn get_text(&self, path: &str) -> String {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET a page");
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.expect("page text")
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET the API");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON answer")
    }

    /// `POST /api/register` with the page's token, as the page's script sends it.
    async fn post_register(&self, code: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/register"))
            .header("X-CSRF-Token", self.csrf_token().await)
            .header("Origin", format!("http://127.0.0.1:{}", self.port))
            .json(&json!({ "activationCode": code }))
            .send()
            .await
            .expect("POST /api/register")
    }

    /// Polls the registration progress until it ends (`done` or `failed`).
    async fn registration_outcome(&self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let progress = self.get_json("/api/register/progress").await;
            if progress["state"] == "done" || progress["state"] == "failed" {
                return progress;
            }
            assert!(
                Instant::now() < deadline,
                "registration did not end: {progress}\n{}",
                self.agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `/api/status` until `ready` holds of it.
    async fn status_when(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.get_json("/api/status").await;
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never showed {what}: {status}\n{}",
                self.agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits for the agent's `local pages at http://127.0.0.1:PORT/` line.
async fn pages_port(agent: &mut Agent) -> u16 {
    const LINE: &str = "local pages at http://127.0.0.1:";
    let deadline = Instant::now() + WAIT;
    loop {
        let log = agent.log();
        if let Some(at) = log.find(LINE) {
            let rest = &log[at + LINE.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits
                .parse()
                .unwrap_or_else(|_| panic!("no port in the log:\n{log}"));
        }
        if let Some(exit) = agent.exited() {
            panic!("devicehub run ended ({exit}) before serving its pages:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "devicehub run never served its pages:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_listed_device(status: &Value, id: &str) -> bool {
    status["devices"].as_array().is_some_and(|devices| {
        devices
            .iter()
            .any(|d| d["id"] == id && d["plugin"] == "zebra")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn web_requests_from_foreign_hosts_origins_and_without_the_token_are_refused() {
    let desk = Desk::start().await;
    let port = desk.port;

    // A DNS-rebinding page reaches 127.0.0.1 under its own name.
    for path in ["/", "/register", "/api/status", "/api/register/progress"] {
        let refused = desk
            .http
            .get(desk.url(path))
            .header("Host", format!("rebind.example:{port}"))
            .send()
            .await
            .expect("GET with a foreign Host");
        assert_eq!(refused.status(), 421, "{path}");
        let text = refused.text().await.expect("refusal text");
        assert!(text.contains("not DeviceHub's local page"), "{text}");
    }

    let foreign_origin = desk
        .http
        .get(desk.url("/api/status"))
        .header("Origin", "http://shop.example")
        .send()
        .await
        .expect("GET with a foreign Origin");
    assert_eq!(foreign_origin.status(), 403);

    let token = desk.csrf_token().await;
    let body = json!({ "activationCode": desk.prepared.code });
    let without_token = desk
        .http
        .post(desk.url("/api/register"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(without_token.status(), 403);
    assert!(without_token
        .text()
        .await
        .expect("text")
        .contains("security token"));
    let wrong_token = desk
        .http
        .post(desk.url("/api/register"))
        .header("X-CSRF-Token", "0".repeat(token.len()))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong_token.status(), 403);
    let from_elsewhere = desk
        .http
        .post(desk.url("/api/register"))
        .header("X-CSRF-Token", &token)
        .header("Origin", "http://shop.example")
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(from_elsewhere.status(), 403);
    // What a cross-site HTML form can send: no custom header, a form body, marked cross-site.
    let form = desk
        .http
        .post(desk.url("/api/register"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Sec-Fetch-Site", "cross-site")
        .body(format!("activationCode={}", desk.prepared.code))
        .send()
        .await
        .expect("POST a form");
    assert_eq!(form.status(), 403);
    // Even with the token, the API takes JSON only.
    let form_with_token = desk
        .http
        .post(desk.url("/api/register"))
        .header("X-CSRF-Token", &token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("activationCode={}", desk.prepared.code))
        .send()
        .await
        .expect("POST a form");
    assert_eq!(form_with_token.status(), 400);

    let progress = desk.get_json("/api/register/progress").await;
    assert_eq!(
        progress["state"], "idle",
        "no refused request started a registration"
    );
    let status = desk.get_json("/api/status").await;
    assert_eq!(status["thingName"], Value::Null);
    assert_eq!(status["link"]["state"], "not registered");

    // The pages say what the browser may load: this server only.
    let page = desk.http.get(desk.url("/")).send().await.expect("GET /");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("CSP text")
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");

    let health = desk.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["registered"], false);

    assert_loopback_only(port);
}

/// The server listens on 127.0.0.1 only: nothing answers on this computer's other addresses,
/// and the kernel's socket table has no listener on the port bound to any other address.
fn assert_loopback_only(port: u16) {
    if let Some(address) = non_loopback_address() {
        let refused =
            TcpStream::connect_timeout(&SocketAddr::new(address, port), Duration::from_secs(5));
        assert!(refused.is_err(), "the pages answer on {address}:{port}");
    }
    #[cfg(target_os = "linux")]
    {
        let mut listeners = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address is HEXADDR:HEXPORT; state 0A is LISTEN.
                if let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) {
                    if let Some((addr, p)) = local.rsplit_once(':') {
                        if u16::from_str_radix(p, 16) == Ok(port) {
                            listeners.push(addr.to_string());
                        }
                    }
                }
            }
        }
        assert_eq!(
            listeners,
            vec!["0100007F".to_string()],
            "listeners on port {port}: 127.0.0.1 only"
        );
    }
}

/// An address of this computer other than loopback, when it has one: the one it would send
/// from (a UDP "connection" sends nothing).
fn non_loopback_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let address = socket.local_addr().ok()?.ip();
    (!address.is_loopback() && !address.is_unspecified()).then_some(address)
}

#[tokio::test(flavor = "multi_thread")]
async fn web_registers_with_the_activation_code_and_shows_the_printer() {
    let desk = Desk::start().await;

    // A mistyped code: refused, in plain words, and the desk can try again.
    let started = desk.post_register(WRONG_CODE).await;
    assert_eq!(started.status(), 202);
    let failed = desk.registration_outcome().await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["failure"]["kind"], "activationCodeRefused",
        "{failed}"
    );
    assert_eq!(
        failed["failure"]["title"],
        "The activation code was not accepted."
    );
    assert!(
        failed["failure"]["next"]
            .as_str()
            .expect("next")
            .contains("get a new code"),
        "{failed}"
    );

    let started = desk.post_register(&desk.prepared.code).await;
    assert_eq!(started.status(), 202);
    let done = desk.registration_outcome().await;
    assert_eq!(done["state"], "done", "{done}\n{}", desk.agent.log());
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    for step in [
        "keyGenerated",
        "certificateIssued",
        "thingRegistered",
        "connected",
    ] {
        assert!(steps.contains(&step), "{step} missing from {steps:?}");
    }
    assert_eq!(steps.last(), Some(&"connected"));
    let thing = done["thingName"].as_str().expect("thing name").to_string();

    let status = desk
        .status_when("the agent connected", |s| s["link"]["state"] == "connected")
        .await;
    assert_eq!(status["thingName"], thing.as_str());
    assert!(is_listed_device(&status, PRINTER), "{status}");
    assert!(
        status["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .any(|p| p["name"] == "zebra"),
        "{status}"
    );

    // Registered: a second registration is refused, and the start page leads to the status.
    let again = desk.post_register(&desk.prepared.code).await;
    assert_eq!(again.status(), 409);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let start = no_redirects.get(desk.url("/")).send().await.expect("GET /");
    assert_eq!(start.status(), 303);
    assert_eq!(start.headers()["location"], "/status");
    let health = desk.get_json("/healthz").await;
    assert_eq!(health["registered"], true);
}

/// The browsers the pages are tested in. Safari cannot run here (docs/local-pages.md says
/// what is done for it instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrowserKind {
    /// Headless Chromium through chromedriver (W3C WebDriver over HTTP).
    Chromium,
    /// Headless Firefox ESR through Marionette, its own remote protocol.
    Firefox,
}

/// A browser walking the pages, whichever remote protocol drives it. The walks are written
/// once against this, so every browser is held to the same checks.
enum Browser {
    Chromium(ChromeDriver),
    Firefox(Marionette),
}

/// `chromedriver` on a free port with headless Chromium; stopped when dropped.
struct ChromeDriver {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// The W3C WebDriver key for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Enter key in WebDriver's key encoding.
const ENTER: &str = "\u{E007}";
/// The Tab key in WebDriver's key encoding.
const TAB: &str = "\u{E004}";
/// The window size of every walk, so that the browsers' screenshots compare.
const WINDOW: (u32, u32) = (1000, 1000);

/// How many times chromedriver is started when it, or the Chromium it starts, fails to.
const CHROMEDRIVER_STARTS: usize = 3;

/// Starts `chromedriver --port=0`; returns it, its port and the rest of its output, or why it
/// did not start (its exit status and standard error).
fn start_chromedriver() -> Result<
    (
        Child,
        u16,
        std::io::Lines<BufReader<std::process::ChildStdout>>,
    ),
    String,
> {
    let stderr = tempfile::NamedTempFile::new().expect("a file for chromedriver's errors");
    let mut driver = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("chromedriver's error file"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver ({e}): install chromium and chromium-driver (.ci/run does)")
        });
    let stdout = driver.stdout.take().expect("chromedriver's output");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let Some(line) = lines.next() else {
            let status = driver.wait().expect("wait for chromedriver");
            let said = std::fs::read_to_string(stderr.path()).unwrap_or_default();
            return Err(format!(
                "it ended ({status}) before it said its port: {said}"
            ));
        };
        let line = line.expect("chromedriver's output");
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            let port = rest
                .trim_end_matches('.')
                .trim()
                .parse::<u16>()
                .expect("chromedriver's port");
            return Ok((driver, port, lines));
        }
    }
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        // chromedriver and Chromium are outside programs: a start that fails (chromedriver has
        // ended at once on a loaded machine) is tried again, and the last failure is shown
        // with what it said.
        let mut failure = String::new();
        for _ in 0..CHROMEDRIVER_STARTS {
            match ChromeDriver::try_start().await {
                Ok(started) => return started,
                Err(why) => failure = why,
            }
        }
        panic!("Chromium did not start {CHROMEDRIVER_STARTS} times; last: {failure}")
    }

    /// chromedriver with a headless Chromium session, or why either did not start.
    async fn try_start() -> Result<ChromeDriver, String> {
        let (mut driver, port, lines) = start_chromedriver()?;
        // The rest of the output is not needed, but the pipe must not fill up.
        std::thread::spawn(move || for _ in lines {});
        let profile = tempfile::tempdir().expect("browser profile folder");
        let base = format!("http://127.0.0.1:{port}");
        let http = http_client();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1000,1000", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer = async {
            let response = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
                .map_err(|e| format!("chromedriver did not answer the session request: {e}"))?;
            let answer: Value = response
                .json()
                .await
                .map_err(|e| format!("chromedriver's session answer: {e}"))?;
            match answer["value"]["sessionId"].as_str() {
                Some(session) => Ok(session.to_string()),
                None => Err(format!("no browser session: {answer}")),
            }
        }
        .await;
        match answer {
            Ok(session) => Ok(ChromeDriver {
                driver,
                base,
                session,
                http,
                _profile: profile,
            }),
            Err(why) => {
                let _ = driver.kill();
                let _ = driver.wait();
                Err(why)
            }
        }
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method.clone(), path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {method} {path} failed: {error}"))
    }

    /// One WebDriver command; the WebDriver error object is `Err`.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .json()
            .await
            .expect("WebDriver's answer");
        if answer["value"]["error"].is_string() {
            return Err(answer["value"].clone());
        }
        Ok(answer["value"].clone())
    }
}

impl Browser {
    async fn start(kind: BrowserKind) -> Browser {
        let browser = match kind {
            BrowserKind::Chromium => Browser::Chromium(ChromeDriver::start().await),
            BrowserKind::Firefox => Browser::Firefox(Marionette::start().await),
        };
        // Chromium is started at this size; headless Firefox starts at its own default.
        browser.resize(WINDOW.0, WINDOW.1).await;
        browser
    }

    fn kind(&self) -> BrowserKind {
        match self {
            Browser::Chromium(_) => BrowserKind::Chromium,
            Browser::Firefox(_) => BrowserKind::Firefox,
        }
    }

    async fn open(&self, url: &str) {
        match self {
            Browser::Chromium(c) => {
                c.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
                    .await
            }
            Browser::Firefox(f) => f.command("WebDriver:Navigate", json!({ "url": url })).await,
        };
    }

    async fn current_url(&self) -> String {
        match self {
            Browser::Chromium(c) => c.command(reqwest::Method::GET, "/url", None).await,
            Browser::Firefox(f) => f.command("WebDriver:GetCurrentURL", json!({})).await,
        }
        .as_str()
        .expect("URL")
        .to_string()
    }

    async fn element(&self, css: &str) -> String {
        let query = json!({ "using": "css selector", "value": css });
        let found = match self {
            Browser::Chromium(c) => {
                c.command(reqwest::Method::POST, "/element", Some(query))
                    .await
            }
            Browser::Firefox(f) => f.command("WebDriver:FindElement", query).await,
        };
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        match self {
            Browser::Chromium(c) => {
                c.command(
                    reqwest::Method::POST,
                    &format!("/element/{element}/click"),
                    None,
                )
                .await
            }
            Browser::Firefox(f) => {
                f.command("WebDriver:ElementClick", json!({ "id": element }))
                    .await
            }
        };
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        match self {
            Browser::Chromium(c) => {
                c.command(
                    reqwest::Method::POST,
                    &format!("/element/{element}/clear"),
                    None,
                )
                .await;
                c.command(
                    reqwest::Method::POST,
                    &format!("/element/{element}/value"),
                    Some(json!({ "text": text })),
                )
                .await
            }
            Browser::Firefox(f) => {
                f.command("WebDriver:ElementClear", json!({ "id": element }))
                    .await;
                f.command(
                    "WebDriver:ElementSendKeys",
                    json!({ "id": element, "text": text }),
                )
                .await
            }
        };
    }

    async fn text(&self, css: &str) -> String {
        let element = self.element(css).await;
        match self {
            Browser::Chromium(c) => {
                c.command(
                    reqwest::Method::GET,
                    &format!("/element/{element}/text"),
                    None,
                )
                .await
            }
            Browser::Firefox(f) => {
                f.command("WebDriver:GetElementText", json!({ "id": element }))
                    .await
            }
        }
        .as_str()
        .expect("element text")
        .to_string()
    }

    /// Runs `script` in the page and returns its value.
    async fn script(&self, script: &str) -> Value {
        self.try_script(script)
            .await
            .unwrap_or_else(|error| panic!("{:?}: script {script} failed: {error}", self.kind()))
    }

    /// Runs `script` in the page; the WebDriver error object is `Err`.
    async fn try_script(&self, script: &str) -> Result<Value, Value> {
        let call = json!({ "script": script, "args": [] });
        match self {
            Browser::Chromium(c) => {
                c.try_command(reqwest::Method::POST, "/execute/sync", Some(call))
                    .await
            }
            Browser::Firefox(f) => f.try_command("WebDriver:ExecuteScript", call).await,
        }
    }

    /// Waits until `script` returns true in the page. A script that fails counts as "not yet":
    /// while a page is being replaced, the browser can drop a script that ran in the old one.
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let outcome = self.try_script(script).await;
            if outcome == Ok(Value::Bool(true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: the page never showed {what} (last answer: {outcome:?}); it shows:\n{}",
                self.kind(),
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element with focus, as `tag#id`.
    async fn focused(&self) -> String {
        self.script(
            "const e = document.activeElement; return e.tagName.toLowerCase() + '#' + e.id;",
        )
        .await
        .as_str()
        .expect("focused element")
        .to_string()
    }

    /// The focused element is on screen and outlined, as a keyboard user needs to see where
    /// they are.
    async fn assert_focus_visible(&self) {
        let seen = self
            .script(
                "const e = document.activeElement; const r = e.getBoundingClientRect(); \
                 const s = getComputedStyle(e); \
                 return { onScreen: r.left >= 0 && r.top >= 0 && r.right <= window.innerWidth \
                          && r.bottom <= window.innerHeight && r.width > 0 && r.height > 0, \
                          outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0 };",
            )
            .await;
        let focused = self.focused().await;
        assert_eq!(
            seen,
            json!({ "onScreen": true, "outline": true }),
            "{:?}: the focus on {focused} cannot be seen",
            self.kind()
        );
    }

    /// Presses keys on the focused element.
    async fn keys(&self, keys: &str) {
        let actions = json!({ "actions": [{
            "type": "key", "id": "keyboard",
            "actions": keys.chars().flat_map(|c| {
                let key = c.to_string();
                [json!({ "type": "keyDown", "value": key }), json!({ "type": "keyUp", "value": key })]
            }).collect::<Vec<_>>(),
        }]});
        match self {
            Browser::Chromium(c) => {
                c.command(reqwest::Method::POST, "/actions", Some(actions))
                    .await
            }
            Browser::Firefox(f) => f.command("WebDriver:PerformActions", actions).await,
        };
    }

    async fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        match self {
            Browser::Chromium(c) => {
                c.command(reqwest::Method::POST, "/window/rect", Some(rect))
                    .await
            }
            Browser::Firefox(f) => f.command("WebDriver:SetWindowRect", rect).await,
        };
    }

    /// 200% zoom is the same as half the window: at that size the page must reflow with no
    /// sideways scrolling. The window is put back to its size afterwards. Firefox is also
    /// zoomed to 200% for real.
    async fn assert_readable_at_200_percent(&self, page: &str) {
        let (width, height) = (WINDOW.0 / 2, WINDOW.1 * 9 / 20);
        self.resize(width, height).await;
        let inner = self.script("return window.innerWidth;").await;
        assert!(
            inner.as_u64().is_some_and(|w| w <= u64::from(width)),
            "{:?}: the window did not shrink to {width} wide: {inner}",
            self.kind()
        );
        let fits = self
            .script("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        assert_eq!(
            fits,
            Value::Bool(true),
            "{:?}: {page} scrolls sideways at 200%",
            self.kind()
        );
        self.resize(WINDOW.0, WINDOW.1).await;
        // Firefox can also be zoomed for real, as a person does with Ctrl and +; the page must
        // reflow the same way.
        if let Browser::Firefox(firefox) = self {
            firefox.set_page_zoom(2.0).await;
            self.wait_for(
                "the page zoomed to 200%",
                &format!("return window.innerWidth <= {width};"),
            )
            .await;
            let fits = self
                .script("return document.documentElement.scrollWidth <= window.innerWidth;")
                .await;
            firefox.set_page_zoom(1.0).await;
            assert_eq!(
                fits,
                Value::Bool(true),
                "Firefox: {page} scrolls sideways at 200% page zoom"
            );
        }
    }

    /// A screenshot of the window, checked to be a PNG, and written to
    /// `docs/screenshots/NAME.png` (Chromium) or `docs/screenshots/firefox-NAME.png` when
    /// `DEVICEHUB_UPDATE_SCREENSHOTS=1`.
    async fn screenshot(&self, name: &str) {
        let (encoded, name) = match self {
            Browser::Chromium(c) => (
                c.command(reqwest::Method::GET, "/screenshot", None).await,
                name.to_string(),
            ),
            Browser::Firefox(f) => (
                // The viewport, as W3C WebDriver's Take Screenshot, not the whole document.
                f.command("WebDriver:TakeScreenshot", json!({ "full": false }))
                    .await,
                format!("firefox-{name}"),
            ),
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("screenshot text"))
            .expect("screenshot base64");
        let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .expect("screenshot PNG");
        assert!(
            image.width() > 300 && image.height() > 300,
            "{name}: {}x{}",
            image.width(),
            image.height()
        );
        if std::env::var("DEVICEHUB_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&dir).expect("docs/screenshots");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write the screenshot");
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Ending the session closes Chromium (a plain HTTP request: Drop cannot await).
        // chromedriver itself goes with the kill.
        let address = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut stream) = TcpStream::connect(&address) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Debian's Chromium, or the one `CHROMIUM` names.
fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| {
        [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("no Chromium found: install chromium and chromium-driver (.ci/run does)")
        })
        .to_string()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn web_chromium_walks_the_registration_and_sees_the_printer() {
    walk_the_registration_and_see_the_printer(BrowserKind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_firefox_walks_the_registration_and_sees_the_printer() {
    walk_the_registration_and_see_the_printer(BrowserKind::Firefox).await;
}

/// A person at the desk registering by keyboard, then looking at the status page, at 100% and
/// at 200% zoom.
async fn walk_the_registration_and_see_the_printer(kind: BrowserKind) {
    let desk = Desk::start().await;
    let browser = Browser::start(kind).await;

    browser.open(&desk.url("/")).await;
    assert_eq!(browser.text("h1").await, "Welcome to DeviceHub");
    browser.screenshot("welcome").await;
    browser
        .assert_readable_at_200_percent("the welcome page")
        .await;

    // By keyboard: the skip link first, then the way to register.
    browser.keys(TAB).await;
    assert_eq!(browser.focused().await, "a#skip");
    browser.assert_focus_visible().await;
    browser.keys(TAB).await;
    assert_eq!(browser.focused().await, "a#start");
    browser.assert_focus_visible().await;
    browser.keys(ENTER).await;
    browser
        .wait_for(
            "the code form",
            "return document.getElementById('code') !== null",
        )
        .await;
    assert!(browser.current_url().await.ends_with("/register"));
    browser.screenshot("register").await;

    // A mistyped code, submitted with Enter: the page says what happened and what to do.
    browser
        .type_into("#code", &format!("{WRONG_CODE}{ENTER}"))
        .await;
    browser
        .wait_for(
            "the failure",
            "return !document.getElementById('failure').hidden",
        )
        .await;
    assert_eq!(
        browser.text("#failure-title").await,
        "The activation code was not accepted."
    );
    assert!(browser
        .text("#failure-next")
        .await
        .contains("get a new code"));
    assert_eq!(
        browser.focused().await,
        "input#code",
        "focus returns to the code"
    );
    browser.screenshot("register-refused").await;
    browser
        .assert_readable_at_200_percent("the refused code")
        .await;

    // Reloading while a registration request is on its way leaves a usable form. The submit
    // handler disables the button at once; the request is held in the page (whether a request
    // cut short by the reload reaches the agent is the browser's race, and a late one would
    // make the next registration "already under way"), and the reload is queued behind it.
    let disabled_before = browser
        .script(
            "window.beforeReload = true; \
             window.fetch = () => new Promise(() => {}); \
             document.getElementById('code').value = 'WRONG-CODE-0000'; \
             document.getElementById('register-form').requestSubmit(); \
             setTimeout(() => location.reload(), 0); \
             return document.getElementById('submit').disabled;",
        )
        .await;
    assert_eq!(
        disabled_before,
        Value::Bool(true),
        "the button is disabled while a registration starts"
    );
    browser
        .wait_for(
            "the reloaded form",
            "return window.beforeReload === undefined && document.readyState === 'complete' \
             && document.getElementById('code') !== null",
        )
        .await;
    assert_eq!(desk.registration_outcome().await["state"], "failed");
    assert_eq!(
        browser
            .script("return document.getElementById('submit').disabled;")
            .await,
        Value::Bool(false),
        "{kind:?}: the Register button stays disabled after a reload"
    );

    browser
        .type_into("#code", &format!("{}{ENTER}", desk.prepared.code))
        .await;
    browser
        .wait_for(
            "the registration done",
            "return !document.getElementById('done').hidden",
        )
        .await;
    assert_eq!(
        browser.focused().await,
        "h2#done-title",
        "focus moves to the outcome"
    );
    for step in [
        "keyGenerated",
        "certificateIssued",
        "thingRegistered",
        "connected",
    ] {
        let state = browser
            .text(&format!("#steps li[data-step=\"{step}\"] .state"))
            .await;
        assert_eq!(state, "done", "{step}");
    }
    let devices = browser.text("#done-devices").await;
    assert!(
        devices.contains(PRINTER) && devices.contains("zebra"),
        "{devices}"
    );
    browser.screenshot("registered").await;

    browser.click("#to-status").await;
    browser
        .wait_for(
            "the connected printer",
            "return document.getElementById('link-state').textContent === 'Connected' \
             && document.querySelector('#devices tr[data-device=\"zebra-1\"]') !== null",
        )
        .await;
    let row = browser.text("#devices tr[data-device=\"zebra-1\"]").await;
    assert!(row.contains("zebra") && row.contains("attached"), "{row}");
    let thing = desk.get_json("/api/status").await["thingName"]
        .as_str()
        .expect("thing")
        .to_string();
    assert_eq!(browser.text("#thing-name").await, thing);
    browser.screenshot("status").await;

    browser
        .assert_readable_at_200_percent("the status page")
        .await;
}

/// The pages served in this process for an agent with no plugins or devices, so that a test
/// can send the live events (scale readings, jobs) that the agent's devices would.
struct InProcessPages {
    agent: std::sync::Arc<devicehub::agent::Agent>,
    pages: Option<devicehub::web::LocalPages>,
    _data: tempfile::TempDir,
}

impl InProcessPages {
    async fn start() -> InProcessPages {
        use devicehub::agent::Agent as AgentState;
        let data = tempfile::tempdir().expect("data folder");
        let agent = std::sync::Arc::new(AgentState::new(
            devicehub::config::Config::default(),
            devicehub::storage::DataDir::new(data.path().to_path_buf()),
            std::sync::Arc::new(devicehub::plugins::SharedPlugins::default()),
            std::sync::Arc::new(devicehub::devices::DeviceTable::default()),
            devicehub::cloud::events::SharedHealth::default(),
            None,
        ));
        let pages = devicehub::web::LocalPages::start(agent.clone(), 0)
            .await
            .expect("start the pages");
        InProcessPages {
            agent,
            pages: Some(pages),
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        let addr = self.pages.as_ref().expect("pages running").addr();
        format!("http://{addr}{path}")
    }

    fn scale_reading(&self) {
        self.agent
            .publish_local(devicehub::agent::LocalEvent::Scale {
                device: "scale-1".to_string(),
                reading: devicehub::agent::ReadingView {
                    state: "stable",
                    micrograms: 1_250_000_000,
                    resolution_micrograms: 1_000_000,
                    display_unit: "kg",
                    at_ms: 0,
                },
            });
    }

    fn job_ended(&self, job_id: &str) {
        let job = json!({ "jobId": job_id, "status": "SUCCEEDED", "at": 1_700_000_000u64 });
        devicehub::cloud::events::board(self.agent.health()).job_ended(job.clone());
        self.agent
            .publish_local(devicehub::agent::LocalEvent::Job(job));
    }
}

/// Reads an event stream until `wanted` has arrived, returning all that was read.
async fn read_events_until(response: &mut reqwest::Response, wanted: &[&str]) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + WAIT;
    while !wanted.iter().all(|w| seen.contains(w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("the event stream never sent {wanted:?}; it sent:\n{seen}"))
            .expect("read the event stream")
            .unwrap_or_else(|| panic!("the event stream ended; it sent:\n{seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn web_events_stream_readings_and_jobs_but_never_scans_and_end_on_stop() {
    let mut pages = InProcessPages::start().await;
    let http = http_client();
    let mut events = http
        .get(pages.url("/api/events"))
        .send()
        .await
        .expect("GET /api/events");
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    // An address block is personal data: pages never receive it.
    pages
        .agent
        .publish_local(devicehub::agent::LocalEvent::Scan {
            device: "scanner-1".to_string(),
            text: devicehub::agent::ScannedLines(vec![
                "Jane Doe".to_string(),
                "1 Main St".to_string(),
            ]),
        });
    pages.scale_reading();
    pages.job_ended("job-42");
    let seen = read_events_until(&mut events, &["event: scale", "event: job"]).await;
    assert!(seen.contains("\"micrograms\":1250000000"), "{seen}");
    assert!(seen.contains("\"displayUnit\":\"kg\""), "{seen}");
    assert!(seen.contains("job-42"), "{seen}");
    assert!(!seen.contains("scan") && !seen.contains("Jane"), "{seen}");

    // Stopping ends the open stream instead of waiting on it.
    let addr = pages.pages.as_ref().expect("pages running").addr();
    pages.pages.take().expect("pages running").stop().await;
    let rest = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        rest.is_ok(),
        "the event stream stayed open after the pages stopped"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the pages still listen after stopping"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn web_chromium_status_page_shows_live_readings_and_jobs() {
    status_page_shows_live_readings_and_jobs(BrowserKind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_firefox_status_page_shows_live_readings_and_jobs() {
    status_page_shows_live_readings_and_jobs(BrowserKind::Firefox).await;
}

/// The status page following live events: a scale reading and an ended job.
async fn status_page_shows_live_readings_and_jobs(kind: BrowserKind) {
    let pages = InProcessPages::start().await;
    let browser = Browser::start(kind).await;
    browser.open(&pages.url("/status")).await;
    browser
        .wait_for(
            "the status",
            "return document.getElementById('link-state').textContent === 'Not registered'",
        )
        .await;
    assert_eq!(browser.text("#no-jobs").await, "No jobs yet.");
    assert!(browser
        .text("#not-registered")
        .await
        .contains("Register it"));

    // The page subscribes once it has loaded; send readings until one shows.
    let deadline = Instant::now() + WAIT;
    loop {
        pages.scale_reading();
        let shown = browser.text("#scale-reading").await;
        if shown == "scale-1: 1.250 kg (stable)" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reading never showed; the page shows {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pages.job_ended("job-42");
    browser
        .wait_for(
            "the job",
            "return document.querySelector('#jobs tbody').textContent.includes('job-42')",
        )
        .await;
    let jobs = browser.text("#jobs tbody").await;
    assert!(jobs.contains("SUCCEEDED"), "{jobs}");
}
