//! Turning Tesseract's text into address lines in printable ASCII.
//!
//! Tesseract's English model answers in UTF-8 with typographic quotes and dashes, ligatures
//! (ﬁ, ﬂ) and now and then an accented letter; carriers take ASCII. Each line is
//! transliterated, stripped of anything else outside printable ASCII, its runs of spaces
//! collapsed and trimmed; empty lines (Tesseract separates paragraphs with them) are dropped.

/// The ASCII for `c`: itself when printable ASCII, a transliteration for the characters OCR
/// produces, a space for any space, and nothing otherwise.
fn transliterate(c: char) -> &'static str {
    const PRINTABLE: &str = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    if c == ' ' || c.is_ascii_graphic() {
        let index = c as usize - 0x20;
        return &PRINTABLE[index..index + 1];
    }
    if c.is_whitespace() {
        return " ";
    }
    match c {
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬀ' => "ff",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        '‘' | '’' | '‚' | '′' | '´' => "'",
        '“' | '”' | '„' | '″' | '«' | '»' => "\"",
        '‐' | '‑' | '‒' | '–' | '—' | '−' => "-",
        '…' => "...",
        '°' | 'º' => "o",
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => "A",
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
        'Æ' => "AE",
        'æ' => "ae",
        'Ç' => "C",
        'ç' => "c",
        'È' | 'É' | 'Ê' | 'Ë' => "E",
        'è' | 'é' | 'ê' | 'ë' => "e",
        'Ì' | 'Í' | 'Î' | 'Ï' => "I",
        'ì' | 'í' | 'î' | 'ï' => "i",
        'Ñ' => "N",
        'ñ' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
        'Œ' => "OE",
        'œ' => "oe",
        'ß' => "ss",
        'Ù' | 'Ú' | 'Û' | 'Ü' => "U",
        'ù' | 'ú' | 'û' | 'ü' => "u",
        'Ý' | 'Ÿ' => "Y",
        'ý' | 'ÿ' => "y",
        _ => "",
    }
}

/// One line in printable ASCII, spaces collapsed and trimmed.
pub fn normalize_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for a in text.chars().flat_map(|c| transliterate(c).chars()) {
        if a == ' ' && (line.is_empty() || line.ends_with(' ')) {
            continue;
        }
        line.push(a);
    }
    line.trim_end().to_string()
}

/// The non-empty lines of `text`, normalised, at most `max_lines`.
pub fn address_lines(text: &str, max_lines: usize) -> Vec<String> {
    text.lines()
        .map(normalize_line)
        .filter(|l| !l.is_empty())
        .take(max_lines)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocr_output_becomes_ascii_lines() {
        let read = "  Jane O’Neil\n\nﬁve Oaks — Suite 4\u{c}\n  Zürich  8001 \n\n";
        assert_eq!(
            address_lines(read, 10),
            ["Jane O'Neil", "five Oaks - Suite 4", "Zurich 8001"]
        );
        assert_eq!(address_lines(read, 1), ["Jane O'Neil"]);
    }
}
