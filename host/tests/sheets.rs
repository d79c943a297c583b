//! Sheet printing against a real IPP server on loopback: CUPS's `ippeveprinter`, started per
//! test on a free port with its own spool folder, and minimal scripted IPP responders for what
//! `ippeveprinter` cannot do (a stopped printer, a job that never ends, TLS with a test CA, a
//! print server's CUPS-Get-Printers on a Unix socket).
//!
//! `ippeveprinter` comes from Debian's `cups-ipp-utils`. It insists on reaching a D-Bus
//! system bus for DNS-SD even with registration off, so each server gets a private
//! `dbus-daemon` (package `dbus-daemon`) through `DBUS_SYSTEM_BUS_ADDRESS`; nothing of the
//! machine's own bus or print system is touched. `-n localhost` makes it listen on the
//! loopback addresses only.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use devicehub::{
    config::{Config, DeviceEntry},
    devices::DeviceTable,
    plugins::PluginSet,
    sheets::{
        self, ImagePlacement, Media, Orientation, PrinterUri, SheetContent, SheetJob, SheetsConfig,
    },
};
use devicehub_plugin_api::{ErrorKind, PrinterState};
use ipp::{
    attribute::{IppAttribute, IppAttributeGroup},
    model::{DelimiterTag, IppVersion, Operation, StatusCode},
    request::IppRequestResponse,
    value::IppValue,
};

use crate::support::{fixture, render_for};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

fn find_program(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: run `apt-get install cups-ipp-utils dbus-daemon` \
         (the packages .ci/run installs)"
    );
}

/// A private D-Bus daemon for one `ippeveprinter`.
struct PrivateBus {
    child: Child,
    address: String,
}

impl PrivateBus {
    fn start(dir: &Path) -> PrivateBus {
        let socket = dir.join("bus");
        let mut child = Command::new(find_program("dbus-daemon"))
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        // The daemon prints its address once it listens.
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bus address");
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon printed {line:?} instead of its address"
        );
        PrivateBus {
            child,
            address: format!("unix:path={}", socket.display()),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `ippeveprinter` on a free loopback port.
struct IppEvePrinter {
    child: Child,
    port: u16,
    spool: tempfile::TempDir,
    _bus: PrivateBus,
    _dir: tempfile::TempDir,
}

impl IppEvePrinter {
    /// A printer that completes every job at once (its print command is `true`).
    fn start() -> IppEvePrinter {
        IppEvePrinter::with_command(&find_program("true"))
    }

    /// A printer whose jobs run `command` (exit status 0 completes them, anything else
    /// aborts them).
    fn with_command(command: &Path) -> IppEvePrinter {
        let dir = tempfile::tempdir().expect("temp dir");
        let bus = PrivateBus::start(dir.path());
        let program = find_program("ippeveprinter");
        // ippeveprinter takes no port 0: take a free port and retry if another process
        // grabs it between our check and its bind.
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let spool = tempfile::tempdir().expect("spool dir");
            let mut child = Command::new(&program)
                .args([
                    "-p",
                    &port.to_string(),
                    "-n",
                    "localhost",
                    "-r",
                    "off",
                    "-k",
                ])
                .arg("-d")
                .arg(spool.path())
                .args(["-f", "application/pdf", "-M", "Example", "-m", "Sheet 1"])
                .arg("-c")
                .arg(command)
                .arg("Test Sheet Printer")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start ippeveprinter");
            let started = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return IppEvePrinter {
                        child,
                        port,
                        spool,
                        _bus: bus,
                        _dir: dir,
                    };
                }
                if let Some(status) = child.try_wait().expect("poll ippeveprinter") {
                    eprintln!("ippeveprinter on port {port} exited with {status}; retrying");
                    break;
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "ippeveprinter did not listen on port {port} within {START_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("ippeveprinter did not start on any of 5 free ports");
    }

    fn uri(&self) -> String {
        format!("ipp://localhost:{}/ipp/print", self.port)
    }

    /// The documents the server has spooled, with their job IDs, in job order.
    fn received(&self) -> Vec<(i32, Vec<u8>)> {
        let mut documents: Vec<(i32, Vec<u8>)> = std::fs::read_dir(self.spool.path())
            .expect("read the spool dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pdf"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let id = name
                    .split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("spool file {name} does not start with a job id"));
                (id, std::fs::read(&p).expect("read the spooled document"))
            })
            .collect();
        documents.sort_by_key(|(id, _)| *id);
        documents
    }
}

impl Drop for IppEvePrinter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device table holding one configured IPP printer, `office`, at `uri`.
fn office_printer(uri: &str) -> DeviceTable {
    office_printer_with(uri, &SheetsConfig::default())
}

/// [`office_printer`] with `config`'s `[system_printers]` settings.
fn office_printer_with(uri: &str, config: &SheetsConfig) -> DeviceTable {
    let entries = vec![DeviceEntry {
        id: "office".into(),
        address: uri.into(),
        usb_id: None,
        plugin: None,
        profile: None,
        serial: None,
        settings: Default::default(),
    }];
    let table = DeviceTable::from_config_with(&entries, &PluginSet::default(), config);
    assert!(table.problems().is_empty(), "{:?}", table.problems());
    table
}

/// Every attribute of job `job_id`, asked with our own Get-Job-Attributes.
fn job_attributes(uri: &str, job_id: i32) -> IppAttributeGroup {
    let printer = PrinterUri::parse(uri).unwrap();
    let mut request =
        IppRequestResponse::new(IppVersion::v1_1(), Operation::GetJobAttributes, None).unwrap();
    let op = |request: &mut IppRequestResponse, name: &str, value: IppValue| {
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            IppAttribute::new(ipp::value::IppName::new(name).unwrap(), value),
        )
    };
    op(&mut request, "printer-uri", IppValue::new_uri(uri).unwrap());
    op(&mut request, "job-id", IppValue::Integer(job_id));
    op(
        &mut request,
        "requested-attributes",
        IppValue::new_keyword("all").unwrap(),
    );
    let response = sheets::http::post(
        &printer.endpoint,
        &printer.path,
        &request.to_bytes(),
        &Default::default(),
        None,
    )
    .expect("Get-Job-Attributes");
    let parsed = sheets::ipp::parse_message(response.body).expect("an IPP answer");
    assert!(parsed.header().status_code().is_success());
    let group = parsed
        .attributes()
        .groups_of(DelimiterTag::JobAttributes)
        .next()
        .expect("job attributes")
        .clone();
    group
}

fn int_of(group: &IppAttributeGroup, name: &str) -> Option<i32> {
    match group.get(name)?.value() {
        IppValue::Integer(n) | IppValue::Enum(n) => Some(*n),
        _ => None,
    }
}

fn keyword_of(group: &IppAttributeGroup, name: &str) -> Option<String> {
    match group.get(name)?.value() {
        IppValue::Keyword(k) => Some(k.as_str().to_string()),
        _ => None,
    }
}

#[test]
fn a_multi_page_pdf_reaches_the_printer_unchanged_and_completes() {
    let server = IppEvePrinter::start();
    let table = office_printer(&server.uri());
    let summary = table.list();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].plugin, "ipp");
    assert_eq!(summary[0].kind, "printer");
    assert_eq!(
        summary[0].connection.as_deref(),
        Some(server.uri().as_str())
    );

    let pdf = std::fs::read(fixture("two-page.pdf")).unwrap();
    let job = SheetJob {
        job_id: "job-two-pages".into(),
        content: SheetContent::Pdf(pdf.clone()),
        media: None,
        orientation: None,
        copies: 1,
    }
    .into_print_job()
    .unwrap();
    let worker = table.get("office").unwrap();
    let report = worker.print(job).expect("the job prints");
    assert_eq!(report.bytes_sent, pdf.len() as u64);
    assert_eq!(report.labels, 2, "two pages, one copy");
    assert!(report.detail.contains("completed"), "{}", report.detail);

    let received = server.received();
    assert_eq!(received.len(), 1, "one document spooled");
    assert!(
        received[0].1 == pdf,
        "the spooled document is the PDF sent, byte for byte"
    );
    let job = job_attributes(&server.uri(), received[0].0);
    assert_eq!(int_of(&job, "job-state"), Some(9), "completed");
    table.shutdown();
}

#[test]
fn copies_media_and_orientation_are_sent() {
    let server = IppEvePrinter::start();
    let table = office_printer(&server.uri());
    let job = SheetJob {
        job_id: "job-copies".into(),
        content: SheetContent::Pdf(std::fs::read(fixture("two-page.pdf")).unwrap()),
        media: Some(Media::parse("iso_a4_210x297mm").unwrap()),
        orientation: Some(Orientation::Landscape),
        copies: 3,
    }
    .into_print_job()
    .unwrap();
    let report = table.get("office").unwrap().print(job).unwrap();
    assert_eq!(report.labels, 6, "two pages, three copies");
    let (job_id, _) = server.received().remove(0);
    let job = job_attributes(&server.uri(), job_id);
    assert_eq!(int_of(&job, "copies"), Some(3));
    assert_eq!(
        keyword_of(&job, "media").as_deref(),
        Some("iso_a4_210x297mm")
    );
    assert_eq!(int_of(&job, "orientation-requested"), Some(4));
    table.shutdown();
}

/// A parsed PDF's first page: the image XObject's dictionary and data, and the matrix the
/// page draws it with.
struct PlacedImage {
    dict: lopdf::Dictionary,
    data: Vec<u8>,
    matrix: Vec<f32>,
    media_box: Vec<f32>,
}

fn number(object: &lopdf::Object) -> f32 {
    match object {
        lopdf::Object::Integer(i) => *i as f32,
        lopdf::Object::Real(r) => *r,
        other => panic!("{other:?} is not a number"),
    }
}

fn placed_image(pdf: &[u8]) -> PlacedImage {
    let document = lopdf::Document::load_mem(pdf).expect("a PDF lopdf reads");
    let pages = document.get_pages();
    assert_eq!(pages.len(), 1, "one page");
    let page_id = *pages.values().next().unwrap();
    let page = document.get_dictionary(page_id).unwrap();
    let media_box = page
        .get(b"MediaBox")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    // The resources are inline in the page or, as printpdf writes them, an indirect object.
    let (inline, referenced) = document.get_page_resources(page_id).unwrap();
    let resources = match inline {
        Some(resources) => resources,
        None => document
            .get_dictionary(*referenced.first().expect("page resources"))
            .unwrap(),
    };
    let xobjects = match resources.get(b"XObject").unwrap() {
        lopdf::Object::Reference(id) => document.get_dictionary(*id).unwrap(),
        lopdf::Object::Dictionary(d) => d,
        other => panic!("XObject resources are {other:?}"),
    };
    assert_eq!(xobjects.len(), 1, "one XObject");
    let (name, reference) = xobjects.iter().next().unwrap();
    let stream = document
        .get_object(reference.as_reference().unwrap())
        .unwrap()
        .as_stream()
        .unwrap();
    let data = stream
        .decompressed_content()
        .unwrap_or_else(|_| stream.content.clone());
    let content = lopdf::content::Content::decode(&document.get_page_content(page_id)).unwrap();
    // The matrix in force at `Do`: the `cm` of the q ... Q block that draws the image.
    let mut matrix = Vec::new();
    for operation in &content.operations {
        match operation.operator.as_str() {
            "cm" => matrix = operation.operands.iter().map(number).collect(),
            "Do" => {
                assert_eq!(operation.operands[0].as_name().unwrap(), name.as_slice());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(matrix.len(), 6, "the image is drawn with a cm matrix");
    PlacedImage {
        dict: stream.dict.clone(),
        data,
        matrix,
        media_box,
    }
}

#[test]
fn an_indicium_is_composed_onto_an_envelope_with_its_bits_unchanged() {
    let server = IppEvePrinter::start();
    let table = office_printer(&server.uri());
    let gif = std::fs::read(fixture("indicia.gif")).unwrap();
    let (x_mm, y_mm) = (180.0, 8.0);
    let job = SheetJob {
        job_id: "job-indicia".into(),
        content: SheetContent::Image {
            data: gif,
            placement: ImagePlacement {
                dpi: 300,
                x_mm,
                y_mm,
            },
        },
        media: Some(Media::parse("na_number-10_4.125x9.5in").unwrap()),
        orientation: Some(Orientation::Landscape),
        copies: 1,
    }
    .into_print_job()
    .unwrap();
    table.get("office").unwrap().print(job).expect("printed");
    let (job_id, pdf) = server.received().remove(0);
    let job = job_attributes(&server.uri(), job_id);
    assert_eq!(
        keyword_of(&job, "media").as_deref(),
        Some("na_number-10_4.125x9.5in"),
        "the envelope is one the printer names, so it goes as its keyword"
    );

    let placed = placed_image(&pdf);
    // The page is the envelope laid landscape: 9.5 x 4.125 in.
    let [x0, y0, page_w, page_h] = placed.media_box[..] else {
        panic!("media box {:?}", placed.media_box);
    };
    assert_eq!((x0, y0), (0.0, 0.0));
    assert!((page_w - 684.0).abs() < 0.05, "page width {page_w} pt");
    assert!((page_h - 297.0).abs() < 0.05, "page height {page_h} pt");

    let dict = &placed.dict;
    let int = |key: &[u8]| dict.get(key).unwrap().as_i64().unwrap();
    assert_eq!(dict.get(b"Subtype").unwrap().as_name().unwrap(), b"Image");
    assert_eq!(int(b"BitsPerComponent"), 1);
    assert_eq!(
        dict.get(b"ColorSpace").unwrap().as_name().unwrap(),
        b"DeviceGray"
    );
    assert!(
        !dict.get(b"Interpolate").unwrap().as_bool().unwrap(),
        "/Interpolate false"
    );
    let decode: Vec<f32> = dict
        .get(b"Decode")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    assert_eq!(decode, [1.0, 0.0], "1 bits are black");

    // The image is the GIF's own pixels, thresholded at native size: compare every bit.
    let expected = render_for(&fixture("indicia.gif"), 300, 10_000, 10_000).remove(0);
    assert_eq!(int(b"Width"), i64::from(expected.width));
    assert_eq!(int(b"Height"), i64::from(expected.height));
    assert!(
        placed.data == expected.data,
        "the image's bits differ from the GIF's"
    );

    // One pixel is 72/300 pt; the top-left corner is x mm from the left, y mm from the top.
    let to_pt = |mm: f64| (mm / 25.4 * 72.0) as f32;
    let w_pt = expected.width as f32 * 72.0 / 300.0;
    let h_pt = expected.height as f32 * 72.0 / 300.0;
    let [a, b, c, d, e, f] = placed.matrix[..] else {
        panic!("matrix {:?}", placed.matrix);
    };
    let close = |got: f32, want: f32| (got - want).abs() < 0.05;
    assert!(
        close(a, w_pt) && close(d, h_pt),
        "scale {a} {d}, want {w_pt} {h_pt}"
    );
    assert!(
        close(b, 0.0) && close(c, 0.0),
        "no rotation or skew: {b} {c}"
    );
    assert!(close(e, to_pt(x_mm)), "x {e} pt, want {}", to_pt(x_mm));
    assert!(
        close(f, page_h - to_pt(y_mm) - h_pt),
        "y {f} pt, want {}",
        page_h - to_pt(y_mm) - h_pt
    );
    table.shutdown();
}

#[tokio::test]
async fn a_cloud_indicia_job_prints_on_an_envelope_at_the_office_printer() {
    let server = IppEvePrinter::start();
    let cloud = crate::support_cloud::Cloud::start();
    let plugins = crate::support::plugins_folder(&[crate::support::ZEBRA]);
    let label_printer = crate::support::Simulator::zebra(&["--language", "zpl"]);
    let devices = format!(
        "{}[[devices]]\nid = \"office\"\naddress = \"{}\"\n[system_printers]\ndiscover = false\n",
        crate::support_desk::zebra_row("zebra-1", &label_printer.print_addr, ""),
        server.uri()
    );
    let desk = crate::support_desk::register(&cloud, plugins.path(), &devices);
    let mut agent =
        crate::support_desk::Agent::start(&desk.config, &desk.data_dir.join("..").join("run.log"));
    let file = fixture("indicia.gif");
    let output = crate::support_desk::emulator_cli(
        &cloud,
        &[
            "job",
            "print",
            &desk.thing,
            file.to_str().expect("UTF-8 path"),
            "--kind",
            "indicia",
            "--device",
            "office",
            "--sheet-media",
            "na_number-10_4.125x9.5in",
            "--sheet-at",
            "180,8",
            "--sheet-orientation",
            "landscape",
            "--json",
        ],
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("job JSON");
    let job = answer["jobId"].as_str().expect("jobId").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let execution = loop {
        let execution: serde_json::Value = crate::support::http_client()
            .get(format!(
                "{}/things/{}/jobs/{job}",
                cloud.api_url, desk.thing
            ))
            .send()
            .await
            .expect("GET job")
            .json()
            .await
            .expect("job JSON");
        if !matches!(execution["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            break execution;
        }
        assert!(agent.exited().is_none(), "{}", agent.log());
        assert!(
            Instant::now() < deadline,
            "job unfinished:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(execution["statusDetails"]["device"], "office");

    // The office printer received one PDF page of the envelope with the GIF's bits placed
    // 180 mm from the left and 8 mm from the top; the label printer printed nothing.
    let (_, pdf) = server.received().remove(0);
    let placed = placed_image(&pdf);
    let expected = render_for(&fixture("indicia.gif"), 300, 10_000, 10_000).remove(0);
    assert!(
        placed.data == expected.data,
        "the image's bits differ from the GIF's"
    );
    let to_pt = |mm: f64| (mm / 25.4 * 72.0) as f32;
    assert!(
        (placed.matrix[4] - to_pt(180.0)).abs() < 0.05,
        "{:?}",
        placed.matrix
    );
    assert!(label_printer.labels().await.is_empty());
}

#[test]
fn an_aborted_job_names_its_reason() {
    let server = IppEvePrinter::with_command(&find_program("false"));
    let table = office_printer(&server.uri());
    let job = SheetJob {
        job_id: "job-aborted".into(),
        content: SheetContent::Pdf(std::fs::read(fixture("two-page.pdf")).unwrap()),
        media: None,
        orientation: None,
        copies: 1,
    }
    .into_print_job()
    .unwrap();
    let err = table.get("office").unwrap().print(job).unwrap_err();
    let error = err.plugin_error().expect("a printer error").clone();
    let message = error.message.to_string();
    assert!(
        message.contains("was aborted (aborted-by-system)"),
        "{message}"
    );
    table.shutdown();
}

#[test]
fn an_unreachable_printer_is_named_as_such() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("ipp://127.0.0.1:{port}/ipp/print");
    let table = office_printer(&uri);
    let job = SheetJob {
        job_id: "job-unreachable".into(),
        content: SheetContent::Pdf(std::fs::read(fixture("two-page.pdf")).unwrap()),
        media: None,
        orientation: None,
        copies: 1,
    }
    .into_print_job()
    .unwrap();
    let err = table.get("office").unwrap().print(job).unwrap_err();
    let error = err.plugin_error().expect("a printer error");
    assert_eq!(error.kind, ErrorKind::Transport);
    assert!(
        error
            .message
            .contains(&format!("printer {uri} cannot be reached")),
        "{}",
        error.message
    );
    table.shutdown();
}

/// How a scripted printer answers a request.
type Answer = fn(&IppRequestResponse) -> IppRequestResponse;

/// Reads one HTTP request carrying an IPP message from `stream` and answers it with
/// `answer`; returns the request's operation.
fn answer_one(stream: &mut (impl Read + Write), answer: Answer) -> Option<i16> {
    let mut reader = BufReader::new(&mut *stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    drop(reader);
    let request = sheets::ipp::parse_message(body).expect("an IPP request");
    let response = answer(&request);
    let body = response.to_bytes();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&body).ok()?;
    stream.flush().ok()?;
    Some(request.header().operation_or_status)
}

fn ok_response(request: &IppRequestResponse) -> IppRequestResponse {
    IppRequestResponse::new_response(
        IppVersion::v1_1(),
        StatusCode::SuccessfulOk,
        request.header().request_id,
    )
    .unwrap()
}

fn attribute(name: &str, value: IppValue) -> IppAttribute {
    IppAttribute::new(ipp::value::IppName::new(name).unwrap(), value)
}

/// Every request: a stopped printer out of paper.
fn as_stopped_printer(request: &IppRequestResponse) -> IppRequestResponse {
    let mut response = ok_response(request);
    let mut group = IppAttributeGroup::new(DelimiterTag::PrinterAttributes);
    let attributes = group.attributes_mut();
    attributes.push(attribute("printer-state", IppValue::Enum(5)));
    attributes.push(attribute(
        "printer-state-reasons",
        IppValue::Array(vec![
            IppValue::new_keyword("media-empty-error").unwrap(),
            IppValue::new_keyword("paused").unwrap(),
        ]),
    ));
    attributes.push(attribute(
        "document-format-supported",
        IppValue::new_mime_media_type("application/pdf").unwrap(),
    ));
    response.attributes_mut().groups_mut().push(group);
    response
}

/// A printer that takes job 7 and keeps it processing for ever.
fn as_never_finishing_printer(request: &IppRequestResponse) -> IppRequestResponse {
    let mut response = ok_response(request);
    let operation = request.header().operation_or_status;
    let (tag, attributes) = if operation == Operation::GetPrinterAttributes as i16 {
        (
            DelimiterTag::PrinterAttributes,
            vec![
                attribute("printer-state", IppValue::Enum(4)),
                attribute(
                    "document-format-supported",
                    IppValue::new_mime_media_type("application/pdf").unwrap(),
                ),
            ],
        )
    } else {
        (
            DelimiterTag::JobAttributes,
            vec![
                attribute("job-id", IppValue::Integer(7)),
                attribute("job-state", IppValue::Enum(5)),
                attribute(
                    "job-state-reasons",
                    IppValue::new_keyword("job-printing").unwrap(),
                ),
            ],
        )
    };
    let mut group = IppAttributeGroup::new(tag);
    group.attributes_mut().extend(attributes);
    response.attributes_mut().groups_mut().push(group);
    response
}

/// An IPP responder on loopback (over TLS with `tls`) that answers every request as a stopped
/// printer out of paper, and reports each request's operation. Returns its URI.
fn stopped_printer(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (String, std::sync::mpsc::Receiver<i16>) {
    scripted_printer(tls, as_stopped_printer)
}

/// An IPP responder on loopback (over TLS with `tls`) that answers with `answer` and reports
/// each request's operation. Returns its URI.
fn scripted_printer(
    tls: Option<Arc<rustls::ServerConfig>>,
    answer: Answer,
) -> (String, std::sync::mpsc::Receiver<i16>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (operations, received) = std::sync::mpsc::channel();
    let scheme = if tls.is_some() { "ipps" } else { "ipp" };
    // The thread ends with the test process; it only ever blocks in accept.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let operation = match &tls {
                Some(config) => {
                    let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    let mut stream = rustls::StreamOwned::new(connection, stream);
                    let operation = answer_one(&mut stream, answer);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                    operation
                }
                None => answer_one(&mut { stream }, answer),
            };
            if let Some(operation) = operation {
                let _ = operations.send(operation);
            }
        }
    });
    (format!("{scheme}://localhost:{port}/ipp/print"), received)
}

/// A CA and a server certificate for `localhost` it signed: (CA PEM, server TLS settings).
fn localhost_tls() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Office Printers CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

#[test]
fn a_stopped_printer_without_paper_refuses_before_any_document_is_sent() {
    let (uri, operations) = stopped_printer(None);
    let table = office_printer(&uri);
    let worker = table.get("office").unwrap();
    let status = worker.printer_status().expect("a status");
    assert_eq!(status.state, PrinterState::PaperOut);
    assert!(
        status
            .detail
            .contains("stopped (media-empty-error, paused)"),
        "{}",
        status.detail
    );
    let job = SheetJob {
        job_id: "job-stopped".into(),
        content: SheetContent::Pdf(std::fs::read(fixture("two-page.pdf")).unwrap()),
        media: None,
        orientation: None,
        copies: 1,
    }
    .into_print_job()
    .unwrap();
    let err = worker.print(job).unwrap_err();
    let error = err.plugin_error().expect("a printer error");
    assert_eq!(error.kind, ErrorKind::NotReady);
    assert_eq!(
        error.printer_state.into_option(),
        Some(PrinterState::PaperOut)
    );
    assert!(
        error
            .message
            .contains("has no paper (media-empty-error, paused)"),
        "{}",
        error.message
    );
    table.shutdown();
    let seen: Vec<i16> = operations.try_iter().collect();
    assert!(
        !seen.contains(&(Operation::PrintJob as i16)),
        "no Print-Job may reach a printer without paper: {seen:?}"
    );
    assert!(seen.contains(&(Operation::GetPrinterAttributes as i16)));
}

#[test]
fn the_printer_state_comes_from_its_attributes() {
    let server = IppEvePrinter::start();
    let table = office_printer(&server.uri());
    let status = table.get("office").unwrap().printer_status().unwrap();
    assert_eq!(status.state, PrinterState::Ready);
    assert!(status.detail.starts_with("idle"), "{}", status.detail);
    let media = status.media.into_option().expect("media-ready is reported");
    assert!(
        media.description.starts_with("na_letter_8.5x11in"),
        "{}",
        media.description
    );
    table.shutdown();

    // The discovery request and answer handling, pointed at the same server in place of a
    // CUPS server: ippeveprinter does not implement CUPS-Get-Printers, so the answer is the
    // precise refusal, not an empty list or a panic.
    let config = SheetsConfig {
        cups_uri: server.uri(),
        cups_socket: Some(std::env::temp_dir().join("devicehub-no-such-cups.sock")),
        ..SheetsConfig::default()
    };
    let err = sheets::discovery::discover(&config).unwrap_err();
    assert!(err.to_string().contains("CUPS-Get-Printers"), "{err}");
}

/// A config file in `dir` with one IPP printer, `office`, at `uri`, and neither USB nor
/// print server discovery.
fn office_config(dir: &Path, uri: &str) -> PathBuf {
    let mut config = Config {
        data_dir: Some(dir.join("data")),
        ..Config::default()
    };
    config.usb.enabled = false;
    config.system_printers.discover = false;
    config.devices.push(DeviceEntry {
        id: "office".into(),
        address: uri.into(),
        usb_id: None,
        plugin: None,
        profile: None,
        serial: None,
        settings: Default::default(),
    });
    let path = dir.join("devicehub.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

#[test]
fn devices_lists_a_configured_ipp_printer_with_its_state() {
    let server = IppEvePrinter::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = office_config(dir.path(), &server.uri());
    let output = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&config_path)
        .args(["--plugins-dir"])
        .arg(dir.path())
        .args(["--json", "devices"])
        .output()
        .expect("run devicehub devices");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let office = listing["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "office")
        .expect("office is listed");
    assert_eq!(office["plugin"], "ipp");
    assert_eq!(office["kind"], "printer");
    assert_eq!(office["connection"], server.uri());
    let state = listing["printer_states"]["office"].as_str().unwrap();
    assert!(state.starts_with("idle"), "{state}");
}

#[test]
fn print_command_composes_an_indicium_for_a_system_printer() {
    let server = IppEvePrinter::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = office_config(dir.path(), &server.uri());
    let output = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&config_path)
        .arg("--plugins-dir")
        .arg(dir.path())
        .arg("print")
        .arg(fixture("indicia.gif"))
        .args([
            "--device",
            "office",
            "--media",
            "#10",
            "--orientation",
            "landscape",
            "--at",
            "180,8",
        ])
        .output()
        .expect("run devicehub print");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Printed 1 sheet(s) on office"), "{stdout}");
    let (_, pdf) = server.received().remove(0);
    let placed = placed_image(&pdf);
    assert!(!placed.dict.get(b"Interpolate").unwrap().as_bool().unwrap());

    // An image without a media size is refused before anything is sent.
    let output = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&config_path)
        .arg("--plugins-dir")
        .arg(dir.path())
        .arg("print")
        .arg(fixture("indicia.gif"))
        .args(["--device", "office"])
        .output()
        .expect("run devicehub print");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a media size"), "{stderr}");
    assert_eq!(server.received().len(), 1);
}

#[test]
fn ipps_printers_are_reached_over_tls_trusting_the_configured_ca() {
    let (ca_pem, server_tls) = localhost_tls();
    let (uri, operations) = stopped_printer(Some(server_tls));
    let dir = tempfile::tempdir().unwrap();
    let ca_bundle = dir.path().join("office-ca.pem");
    std::fs::write(&ca_bundle, &ca_pem).unwrap();
    let config = SheetsConfig {
        ca_bundle: Some(ca_bundle),
        ..SheetsConfig::default()
    };
    let table = office_printer_with(&uri, &config);
    let status = table
        .get("office")
        .unwrap()
        .printer_status()
        .expect("a status over TLS");
    assert_eq!(status.state, PrinterState::PaperOut);
    table.shutdown();
    assert_eq!(
        operations.try_iter().collect::<Vec<_>>(),
        [Operation::GetPrinterAttributes as i16]
    );

    // Without the CA the printer's certificate is not trusted, and the error says TLS.
    let (other_ca, _) = localhost_tls();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
    let untrusting = SheetsConfig {
        ca_bundle: Some(dir.path().join("other-ca.pem")),
        ..SheetsConfig::default()
    };
    let table = office_printer_with(&uri, &untrusting);
    let err = table.get("office").unwrap().printer_status().unwrap_err();
    let error = err.plugin_error().expect("a printer error");
    assert_eq!(error.kind, ErrorKind::Transport);
    assert!(error.message.contains("TLS with"), "{}", error.message);
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{}",
        error.message
    );
    table.shutdown();
}

#[test]
fn a_job_that_never_ends_times_out_with_its_last_state() {
    let (uri, _operations) = scripted_printer(None, as_never_finishing_printer);
    let client = sheets::IppClient::new(
        PrinterUri::parse(&uri).unwrap(),
        sheets::IppLimits {
            // Give up at the first poll that does not see the job end.
            job_timeout: Duration::ZERO,
            ..sheets::IppLimits::default()
        },
        None,
    );
    let printer = client.printer_attributes().unwrap();
    client
        .check_ready(&printer)
        .expect("a processing printer takes jobs");
    let pdf = std::fs::read(fixture("two-page.pdf")).unwrap();
    let ticket = sheets::JobTicket {
        name: "job-slow".into(),
        copies: 1,
        media: None,
        orientation: None,
        no_scaling: false,
    };
    let job_id = client.print_job(&pdf, &ticket, &printer).unwrap();
    assert_eq!(job_id, 7);
    let err = client.wait_for_job(job_id).unwrap_err();
    assert!(
        matches!(err, sheets::IppError::JobTimedOut { job_id: 7, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("did not finish within 0 s (last state processing)"),
        "{err}"
    );
}

#[test]
fn a_cloud_style_pdf_job_passes_through_prepare_job_and_print_async() {
    let server = IppEvePrinter::start();
    let table = office_printer(&server.uri());
    let worker = table.get("office").unwrap();
    // The cloud's jobs prepare files with the device's profile, then print asynchronously.
    let profile = worker.spec().printer_profile().unwrap().clone();
    let pdf = std::fs::read(fixture("two-page.pdf")).unwrap();
    let options = devicehub::print::PrintOptions {
        job_id: "cloud-job-1".into(),
        copies: 2,
        ..Default::default()
    };
    let prepared = devicehub::print::prepare_job(&pdf, &profile, &options).unwrap();
    assert!(
        matches!(&prepared.job.input, devicehub_plugin_api::PrintInput::Pdf(bytes) if bytes.as_slice() == pdf.as_slice()),
        "a PDF is passed through, never rasterised"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(worker.print_async(prepared.job))
        .expect("printed");
    assert_eq!(report.labels, 4);
    let (job_id, received) = server.received().remove(0);
    assert!(received == pdf, "the spooled document is the PDF sent");
    let job = job_attributes(&server.uri(), job_id);
    assert_eq!(int_of(&job, "copies"), Some(2));
    // An image is refused by the PDF-only profile rather than rasterised for a sheet printer.
    let gif = std::fs::read(fixture("indicia.gif")).unwrap();
    let err = devicehub::print::prepare_job(&gif, &profile, &options).unwrap_err();
    assert!(err.to_string().contains("does not take images"), "{err}");
    table.shutdown();
}

/// A print server with two queues, as CUPS answers CUPS-Get-Printers, and an idle printer for
/// anything else.
fn as_cups_server(request: &IppRequestResponse) -> IppRequestResponse {
    let mut response = ok_response(request);
    let queues: &[(&str, &str, i32)] =
        if request.header().operation_or_status == Operation::CupsGetPrinters as i16 {
            &[
                ("Office", "HP LaserJet 400", 3),
                ("Mail Room", "Brother HL-L2350DW", 5),
            ]
        } else {
            &[("Office", "HP LaserJet 400", 3)]
        };
    for (name, model, state) in queues {
        let mut group = IppAttributeGroup::new(DelimiterTag::PrinterAttributes);
        group.attributes_mut().extend([
            attribute(
                "printer-name",
                IppValue::new_name_without_language(*name).unwrap(),
            ),
            attribute(
                "printer-uri-supported",
                IppValue::new_uri(format!(
                    "ipp://localhost:631/printers/{}",
                    name.replace(' ', "_")
                ))
                .unwrap(),
            ),
            attribute(
                "printer-make-and-model",
                IppValue::new_text_without_language(*model).unwrap(),
            ),
            attribute("printer-state", IppValue::Enum(*state)),
        ]);
        response.attributes_mut().groups_mut().push(group);
    }
    response
}

#[cfg(unix)]
#[test]
fn print_server_queues_are_found_through_its_socket_and_attached() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cups.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let (operations, received) = std::sync::mpsc::channel();
    // The thread ends with the test process; it only ever blocks in accept.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if let Some(operation) = answer_one(&mut stream, as_cups_server) {
                let _ = operations.send(operation);
            }
        }
    });
    let config = SheetsConfig {
        // Nothing listens here: every request must go through the socket.
        cups_uri: "ipp://localhost:1/".into(),
        cups_socket: Some(socket.clone()),
        ..SheetsConfig::default()
    };
    let table = DeviceTable::default();
    table.attach_system_printers(&config);
    let listed = table.list();
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["system:Mail_Room", "system:Office"]);
    let office = &listed[1];
    assert_eq!(office.plugin, "system");
    assert_eq!(office.model.as_deref(), Some("HP LaserJet 400"));
    assert_eq!(
        office.connection.as_deref(),
        Some("ipp://localhost:631/printers/Office")
    );
    let status = table
        .get("system:Office")
        .unwrap()
        .printer_status()
        .unwrap();
    assert_eq!(status.state, PrinterState::Ready);
    table.shutdown();
    assert_eq!(
        received.try_iter().collect::<Vec<_>>(),
        [
            Operation::CupsGetPrinters as i16,
            Operation::GetPrinterAttributes as i16
        ]
    );
}
