//! OCR end to end through the plugin's own interface: address blocks drawn in several fonts
//! and sizes are read back, and the exact lines must come back.

mod support;

use devicehub_driver_ocr::driver::{self, OcrScanner};
use devicehub_plugin_api::{
    testing::ScriptedTransport, ErrorKind, GrayImage, OpenRequest, Scanner, Setting,
};

fn open(settings: &[(&str, &str)]) -> Result<OcrScanner, devicehub_plugin_api::PluginError> {
    let (transport, _script) = ScriptedTransport::new("none");
    driver::open(
        &OpenRequest {
            device_id: "ocr".into(),
            profile: "ocr".into(),
            model: None.into(),
            settings: settings
                .iter()
                .map(|(k, v)| Setting::new(k, v))
                .collect::<Vec<_>>()
                .into(),
        },
        transport.into_box(),
    )
}

#[test]
fn addresses_in_every_font_and_size_read_back_exactly() {
    let mut scanner = open(&[]).expect("Tesseract starts (apt-get install tesseract-ocr-eng)");
    let mut misread = Vec::new();
    let mut read = 0;
    for font_name in support::FONTS {
        let font = support::font(font_name);
        for &size in support::SIZES {
            for address in support::ADDRESSES {
                let image = support::render(address, &font, size);
                let text = scanner.recognize(&image).expect("recognize");
                let lines: Vec<String> = text.lines.iter().map(|l| l.to_string()).collect();
                read += 1;
                if lines != *address {
                    misread.push(format!("{font_name} at {size} px: {lines:?}"));
                }
            }
        }
    }
    assert!(
        misread.is_empty(),
        "{} of {read} images misread:\n{}",
        misread.len(),
        misread.join("\n")
    );
}

#[test]
fn accented_text_comes_back_in_ascii() {
    let mut scanner = open(&[]).expect("Tesseract starts");
    let font = support::font("dejavu/DejaVuSans.ttf");
    let image = support::render(
        &["Zo\u{eb} M\u{fc}ller", "Quai d\u{2019}Orsay 12"],
        &font,
        50.0,
    );
    let text = scanner.recognize(&image).expect("recognize");
    let lines: Vec<String> = text.lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(lines, ["Zoe Muller", "Quai d'Orsay 12"]);
}

#[test]
fn a_blank_image_reads_no_lines() {
    let mut scanner = open(&[]).expect("Tesseract starts");
    let image = GrayImage {
        width: 400,
        height: 200,
        pixels: vec![255; 400 * 200].into(),
    };
    assert!(scanner
        .recognize(&image)
        .expect("recognize")
        .lines
        .is_empty());
}

#[test]
fn malformed_and_oversized_images_are_refused() {
    let mut scanner = open(&[]).expect("Tesseract starts");
    for image in [
        GrayImage {
            width: 0,
            height: 10,
            pixels: Vec::new().into(),
        },
        GrayImage {
            width: 10,
            height: 10,
            pixels: vec![255; 99].into(),
        },
        GrayImage {
            width: 100_000,
            height: 100_000,
            pixels: Vec::new().into(),
        },
    ] {
        let err = scanner.recognize(&image).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::InvalidJob, "{}", err.message);
    }
    // The engine is still usable after refusals.
    let font = support::font("dejavu/DejaVuSans.ttf");
    let text = scanner
        .recognize(&support::render(&["Jane Roe"], &font, 50.0))
        .expect("recognize");
    assert_eq!(text.lines.len(), 1);
}

#[test]
fn a_missing_language_is_refused_when_opening() {
    let err = open(&[("language", "zzz")]).expect_err("no such traineddata");
    assert_eq!(err.kind, ErrorKind::NotReady);
    assert!(err.message.contains("tesseract-ocr-zzz"), "{}", err.message);
}

#[test]
fn an_ocr_device_has_nothing_to_poll() {
    let mut scanner = open(&[]).expect("Tesseract starts");
    let err = scanner.poll(10).expect_err("unsupported");
    assert_eq!(err.kind, ErrorKind::Unsupported);
}
