//! A minimal PDF writer for test documents: pages with hand-written content streams, the
//! standard Helvetica font, and optionally an image XObject. Writing PDF by hand keeps every
//! coordinate under the test's control, which a layout library would not.

use std::fmt::Write as _;

/// One page: its media box size in points and its content stream.
pub(crate) struct PdfPage {
    pub(crate) width_pt: f64,
    pub(crate) height_pt: f64,
    pub(crate) content: String,
}

/// An 8-bit grey image XObject put in every page's resources as `/Im1`. Its declared size
/// need not match its data: some tests only need a header.
pub(crate) struct DeclaredImage {
    pub(crate) width: u64,
    pub(crate) height: u64,
    pub(crate) data: Vec<u8>,
}

/// Serialises a complete PDF 1.4 document with a correct cross-reference table.
pub(crate) fn write_pdf(pages: &[PdfPage], image: Option<&DeclaredImage>) -> Vec<u8> {
    write(pages, image, false)
}

/// Like [`write_pdf`], with content streams and the image Flate-compressed as PDF writers do.
pub(crate) fn write_compressed_pdf(pages: &[PdfPage], image: Option<&DeclaredImage>) -> Vec<u8> {
    write(pages, image, true)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("compressing in memory");
    encoder.finish().expect("compressing in memory")
}

fn write(pages: &[PdfPage], image: Option<&DeclaredImage>, compress: bool) -> Vec<u8> {
    // Object numbers: 1 catalog, 2 page tree, 3 font, 4 image (if any), then a page object
    // and its content stream for each page.
    let first_page_object = 5;
    let page_ids: Vec<usize> = (0..pages.len())
        .map(|i| first_page_object + 2 * i)
        .collect();
    let mut objects: Vec<(usize, Vec<u8>)> = Vec::new();
    objects.push((1, b"<< /Type /Catalog /Pages 2 0 R >>".to_vec()));
    let kids: String = page_ids.iter().map(|id| format!("{id} 0 R ")).collect();
    objects.push((
        2,
        format!("<< /Type /Pages /Kids [{kids}] /Count {} >>", pages.len()).into_bytes(),
    ));
    objects.push((
        3,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ));
    if let Some(image) = image {
        let (filter, data) = if compress {
            (" /Filter /FlateDecode", deflate(&image.data))
        } else {
            ("", image.data.clone())
        };
        let mut body = format!(
            "<< /Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceGray \
             /BitsPerComponent 8 /Length {}{filter} >>\nstream\n",
            image.width,
            image.height,
            data.len()
        )
        .into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\nendstream");
        objects.push((4, body));
    }
    let x_objects = if image.is_some() {
        " /XObject << /Im1 4 0 R >>"
    } else {
        ""
    };
    for (page, &id) in pages.iter().zip(&page_ids) {
        objects.push((
            id,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] \
                 /Resources << /Font << /F1 3 0 R >>{x_objects} >> /Contents {} 0 R >>",
                page.width_pt,
                page.height_pt,
                id + 1
            )
            .into_bytes(),
        ));
        let (filter, data) = if compress {
            (" /Filter /FlateDecode", deflate(page.content.as_bytes()))
        } else {
            ("", page.content.as_bytes().to_vec())
        };
        let mut stream = format!("<< /Length {}{filter} >>\nstream\n", data.len()).into_bytes();
        stream.extend_from_slice(&data);
        stream.extend_from_slice(b"\nendstream");
        objects.push((id + 1, stream));
    }
    objects.sort_by_key(|(id, _)| *id);

    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let max_id = objects.last().map_or(0, |(id, _)| *id);
    let mut offsets = vec![None; max_id + 1];
    for (id, body) in &objects {
        offsets[*id] = Some(out.len());
        out.extend_from_slice(format!("{id} 0 obj\n").as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref_offset = out.len();
    let mut xref = format!("xref\n0 {}\n0000000000 65535 f \n", max_id + 1);
    for offset in &offsets[1..] {
        match offset {
            Some(offset) => writeln!(xref, "{offset:010} 00000 n ").expect("writing to a String"),
            None => xref.push_str("0000000000 65535 f \n"),
        }
    }
    write!(
        xref,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n",
        max_id + 1
    )
    .expect("writing to a String");
    out.extend_from_slice(xref.as_bytes());
    out
}
