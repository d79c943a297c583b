//! Normalising scanned text to printable ASCII.
//!
//! Shipping applications and carriers take addresses in ASCII, so accented Latin letters are
//! transliterated (é → e, ß → ss, Æ → AE), typographic punctuation becomes its ASCII form
//! (’ → ', – → -), every kind of space becomes a plain space, and anything else that is not
//! printable ASCII (control characters, symbols, other scripts) is dropped. Runs of spaces are
//! collapsed and each line is trimmed, because scanners pad and OCR doubles spaces.

/// Decodes bytes from a device: UTF-8 when they are valid UTF-8, else ISO 8859-1 (Latin-1),
/// where every byte is a character. Serial devices send either; Latin-1 never fails.
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// The ASCII text standing for `c`: itself when printable ASCII, a transliteration for common
/// Latin letters and punctuation, a space for any space, and nothing otherwise.
pub fn transliterate(c: char) -> &'static str {
    if c.is_ascii_graphic() || c == ' ' {
        return ascii_str(c);
    }
    if c.is_whitespace() {
        return " ";
    }
    match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'Æ' => "AE",
        'æ' => "ae",
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => "C",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'Ď' | 'Đ' | 'Ð' => "D",
        'ď' | 'đ' | 'ð' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => "G",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'Ĥ' | 'Ħ' => "H",
        'ĥ' | 'ħ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => "I",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'Ĵ' => "J",
        'ĵ' => "j",
        'Ķ' => "K",
        'ķ' => "k",
        'Ĺ' | 'Ļ' | 'Ľ' | 'Ŀ' | 'Ł' => "L",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' | 'Ŏ' | 'Ő' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'Œ' => "OE",
        'œ' => "oe",
        'Ŕ' | 'Ŗ' | 'Ř' => "R",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'Ś' | 'Ŝ' | 'Ş' | 'Š' | 'Ș' => "S",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'Ţ' | 'Ť' | 'Ŧ' | 'Ț' => "T",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'Þ' => "TH",
        'þ' => "th",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'Ŵ' => "W",
        'ŵ' => "w",
        'Ý' | 'Ÿ' | 'Ŷ' => "Y",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ź' | 'ż' | 'ž' => "z",
        '‘' | '’' | '‚' | '′' | '´' | '`' => "'",
        '“' | '”' | '„' | '″' | '«' | '»' => "\"",
        '‐' | '‑' | '‒' | '–' | '—' | '−' => "-",
        '…' => "...",
        'º' | '°' => "o",
        'ª' => "a",
        '№' => "No",
        _ => "",
    }
}

/// `c` (printable ASCII) as a static string.
fn ascii_str(c: char) -> &'static str {
    // Every printable ASCII character, in order from the space (0x20): a static table avoids
    // allocating a string per character.
    const PRINTABLE: &str =
        " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    let index = c as usize - 0x20;
    &PRINTABLE[index..index + 1]
}

/// One line in printable ASCII: transliterated, control characters dropped, runs of spaces
/// collapsed, trimmed, and cut to at most `max_len` characters.
pub fn normalize_line(text: &str, max_len: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max_len));
    for c in text.chars() {
        for a in transliterate(c).chars() {
            if a == ' ' && (line.is_empty() || line.ends_with(' ')) {
                continue;
            }
            line.push(a);
        }
        if line.len() >= max_len {
            break;
        }
    }
    line.truncate(max_len);
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accented_letters_and_punctuation_become_ascii() {
        assert_eq!(
            normalize_line("Zoë Ångström–Müller, Straße 5 “Hof”", 80),
            "Zoe Angstrom-Muller, Strasse 5 \"Hof\""
        );
        assert_eq!(normalize_line("Œuvre Æble Łódź", 80), "OEuvre AEble Lodz");
    }

    #[test]
    fn control_characters_and_other_scripts_are_dropped() {
        assert_eq!(
            normalize_line("\u{7}Main\u{1b} St\u{7f} 東京", 80),
            "Main St"
        );
    }

    #[test]
    fn spaces_are_collapsed_and_trimmed() {
        assert_eq!(
            normalize_line("  10\u{a0}\u{a0} Downing\tSt  ", 80),
            "10 Downing St"
        );
    }

    #[test]
    fn lines_are_cut_to_the_limit() {
        assert_eq!(normalize_line("abcdefgh", 5), "abcde");
        assert_eq!(normalize_line("Straße", 5), "Stras");
    }

    #[test]
    fn latin1_bytes_that_are_not_utf8_decode() {
        assert_eq!(decode(b"M\xfcller"), "Müller");
        assert_eq!(decode("Müller".as_bytes()), "Müller");
    }
}
