//! Printer test helpers for plugin authors: a deterministic 1-bit sample label at a profile's
//! resolution, the requests and jobs a test needs, and one call that drives a printer through
//! status, print and status again over a [`ScriptedTransport`], returning what was written.

use abi_stable::std_types::{ROption, RVec};

use super::{ScriptHandle, ScriptedTransport};
use crate::{
    author::Printer,
    device::{OpenRequest, PrintInput, PrintJob, PrintReport, PrinterStatus, RasterPage, Setting},
    error::PluginError,
    manifest::PrinterProfile,
    transport::TransportBox,
};

/// An [`OpenRequest`] for device `test-printer` with `profile` and per-device `settings`.
pub fn open_request(profile: &str, settings: &[(&str, &str)]) -> OpenRequest {
    OpenRequest {
        device_id: "test-printer".into(),
        profile: profile.into(),
        model: ROption::RNone,
        settings: settings
            .iter()
            .map(|(key, value)| Setting::new(key, value))
            .collect::<Vec<_>>()
            .into(),
    }
}

/// A raster job of `pages`, `copies` times, with no media request and no job settings.
pub fn raster_job(pages: Vec<RasterPage>, copies: u32) -> PrintJob {
    PrintJob {
        job_id: "test-job".into(),
        input: PrintInput::Raster(RVec::from(pages)),
        copies,
        media: ROption::RNone,
        settings: RVec::new(),
    }
}

/// A page of `width` x `height` dots from rows written as text: `#` is black, anything else
/// white. Rows shorter than `width` are white to the end. Handy for hand-computed
/// expectations of a few bytes.
pub fn page_from_rows(width: u32, rows: &[&str]) -> RasterPage {
    let stride = (width as usize).div_ceil(8);
    let mut data = vec![0u8; stride * rows.len()];
    for (y, row) in rows.iter().enumerate() {
        for (x, dot) in row.bytes().take(width as usize).enumerate() {
            if dot == b'#' {
                data[y * stride + x / 8] |= 0x80 >> (x % 8);
            }
        }
    }
    RasterPage {
        width,
        height: rows.len() as u32,
        data: data.into(),
    }
}

/// A 1-bit test label for `profile`: 2 x 1 inches at its resolution (narrowed to the
/// printable width when that is smaller), with a one-dot frame, a solid eighth-inch square
/// in the top left corner, and a diagonal from the top left to the bottom right. Every edge,
/// byte boundary and row matters, so a driver that drops, shifts or inverts dots changes the
/// bytes it sends. The padding bits at the end of each row are white, as in pages the host
/// renders.
pub fn render_sample_label(profile: &PrinterProfile) -> RasterPage {
    let width = (2 * profile.dpi).min(profile.width_dots).max(1);
    let height = profile.dpi.min(profile.max_length_dots).max(1);
    let square = (profile.dpi / 8).max(1);
    let stride = (width as usize).div_ceil(8);
    let mut data = vec![0u8; stride * height as usize];
    let mut set = |x: u32, y: u32| {
        data[y as usize * stride + x as usize / 8] |= 0x80 >> (x % 8);
    };
    for y in 0..height {
        for x in 0..width {
            let frame = x == 0 || y == 0 || x == width - 1 || y == height - 1;
            let in_square = x < square && y < square;
            // The diagonal: one dot per column on the line from (0, 0) to (width, height).
            let diagonal = u64::from(x) * u64::from(height) / u64::from(width) == u64::from(y);
            if frame || in_square || diagonal {
                set(x, y);
            }
        }
    }
    RasterPage {
        width,
        height,
        data: data.into(),
    }
}

/// What [`exercise_printer`] saw.
#[derive(Debug)]
pub struct PrinterRun {
    /// The bytes [`Printer::encode`] produced for the job, before anything touched the device.
    pub encoded: Result<Vec<u8>, PluginError>,
    /// The status asked for before printing.
    pub status_before: Result<PrinterStatus, PluginError>,
    /// Everything written while asking for that status.
    pub written_for_status: Vec<u8>,
    /// The outcome of printing the job.
    pub report: Result<PrintReport, PluginError>,
    /// Everything written while printing (status queries included).
    pub written_for_print: Vec<u8>,
    /// The status asked for after printing.
    pub status_after: Result<PrinterStatus, PluginError>,
}

impl PrinterRun {
    /// The report, panicking with the plugin's error when printing failed.
    pub fn expect_printed(&self) -> &PrintReport {
        match &self.report {
            Ok(report) => report,
            Err(err) => panic!("the job did not print: {err}"),
        }
    }

    /// Whether the bytes [`Printer::encode`] gave were written, unchanged and in one piece,
    /// while printing: `encode` is what DeviceHub uses to write a job into a file, so it must
    /// agree with what `print` sends.
    pub fn print_sent_the_encoded_bytes(&self) -> bool {
        match &self.encoded {
            Ok(encoded) if !encoded.is_empty() => self
                .written_for_print
                .windows(encoded.len())
                .any(|w| w == encoded.as_slice()),
            _ => false,
        }
    }
}

/// Opens a printer with `open` over a fresh [`ScriptedTransport`] that `script` prepares (the
/// printer's answers), then: encodes `job`, asks for the status, prints `job` and asks for the
/// status again, keeping what each step wrote. The plugin's errors are returned, not panicked
/// on, so a test can check refusals as well as successes; only a failure to open panics.
pub fn exercise_printer<P, O>(
    open: O,
    request: &OpenRequest,
    script: impl FnOnce(&ScriptHandle),
    job: &PrintJob,
) -> PrinterRun
where
    P: Printer,
    O: FnOnce(&OpenRequest, TransportBox) -> Result<P, PluginError>,
{
    let (transport, handle) = ScriptedTransport::new(request.device_id.as_str());
    script(&handle);
    let mut printer = match open(request, transport.into_box()) {
        Ok(printer) => printer,
        Err(err) => panic!("the printer did not open: {err}"),
    };
    let encoded = printer.encode(job);
    assert!(
        handle.written().is_empty(),
        "encode wrote to the device; it must only compute the bytes"
    );
    let status_before = printer.status();
    let written_for_status = handle.written();
    handle.clear_written();
    let report = printer.print(job);
    let written_for_print = handle.written();
    handle.clear_written();
    let status_after = printer.status();
    PrinterRun {
        encoded,
        status_before,
        written_for_status,
        report,
        written_for_print,
        status_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{InputKind, MediaKind};

    fn profile(dpi: u32, width_dots: u32) -> PrinterProfile {
        PrinterProfile {
            name: "p".into(),
            language: "test".into(),
            dpi,
            width_dots,
            max_length_dots: 10_000,
            media: RVec::from(vec![MediaKind::Continuous]),
            inputs: RVec::from(vec![InputKind::Raster]),
        }
    }

    fn black(page: &RasterPage, x: u32, y: u32) -> bool {
        page.data[y as usize * page.stride() + x as usize / 8] & (0x80 >> (x % 8)) != 0
    }

    #[test]
    fn the_sample_label_is_two_by_one_inches_with_frame_square_and_diagonal() {
        let page = render_sample_label(&profile(203, 832));
        assert_eq!((page.width, page.height), (406, 203));
        assert!(page.is_well_formed());
        for (x, y) in [
            (0, 100),
            (405, 100),
            (200, 0),
            (200, 202),
            (24, 24),
            (405, 202),
        ] {
            assert!(black(&page, x, y), "({x}, {y}) should be black");
        }
        assert!(!black(&page, 25, 24), "the square is 25 dots wide");
        assert!(!black(&page, 200, 50), "inside is white off the diagonal");
        assert!(black(&page, 200, 100), "the diagonal crosses the middle");
        // 406 dots are 50 bytes and 6 bits: the top row's last byte is 6 black dots and two
        // white padding bits.
        assert_eq!(page.data[page.stride() - 1], 0b1111_1100);
    }

    #[test]
    fn the_sample_label_fits_a_narrow_head() {
        let page = render_sample_label(&profile(300, 400));
        assert_eq!((page.width, page.height), (400, 300));
    }

    #[test]
    fn pages_from_rows_set_the_marked_dots() {
        let page = page_from_rows(10, &["#.......##", "", ".#"]);
        assert_eq!(page.data.as_slice(), &[0x80, 0xC0, 0, 0, 0x40, 0]);
    }
}
