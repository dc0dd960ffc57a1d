//! Sizes in bytes as configurations write them: a whole number of bytes (`1048576`), or a number with a unit,
//! binary (`KiB`, `MiB`, `GiB`, `TiB`, `PiB`: powers of 1,024) or decimal (`kB`/`KB`, `MB`, `GB`, `TB`, `PB`:
//! powers of 1,000), a space between allowed (`"500GiB"`, `"2 TiB"`, `"1.5TB"`). A fraction is allowed with a
//! unit, and must come to whole bytes' worth within a byte (it is rounded down).

/// The units, longest first so that `KiB` is not read as `K`.
const UNITS: &[(&str, u64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("B", 1),
];

/// What a size must look like, for error messages.
pub const EXPECTED: &str = "is not a size like \"500GiB\", \"2TiB\", \"1.5TB\" or a whole number of bytes";

/// The bytes `text` stands for; `None` if it is not a size, or is more than `u64::MAX` bytes.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match UNITS.iter().find(|(name, _)| text.ends_with(name)) {
        Some((name, factor)) => (text[..text.len() - name.len()].trim_end(), *factor),
        None => (text, 1),
    };
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.') {
        return None;
    }
    match number.split_once('.') {
        None => number.parse::<u64>().ok()?.checked_mul(unit),
        // A fraction needs a unit to be a fraction of, and digits on both sides of one point.
        Some((whole, fraction)) => {
            if unit == 1 || whole.is_empty() || fraction.is_empty() || fraction.contains('.') || fraction.len() > 18 {
                return None;
            }
            let whole = whole.parse::<u64>().ok()?.checked_mul(unit)?;
            let scale = 10u128.pow(fraction.len() as u32);
            let part = u128::from(fraction.parse::<u64>().ok()?) * u128::from(unit) / scale;
            whole.checked_add(u64::try_from(part).ok()?)
        }
    }
}

/// `bytes` as people read it: in the largest binary unit it is a whole number of (`"500GiB"`), else in bytes.
pub fn format(bytes: u64) -> String {
    let binary = UNITS.iter().filter(|(name, _)| name.ends_with("iB")).rev();
    for (name, factor) in binary {
        if bytes >= *factor && bytes.is_multiple_of(*factor) {
            return format!("{}{name}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_in_binary_and_decimal_units_and_whole_bytes() {
        let cases = [
            ("1048576", Some(1 << 20)),
            ("0", Some(0)),
            ("500GiB", Some(500 << 30)),
            ("2 TiB", Some(2 << 40)),
            ("1.5TB", Some(1_500_000_000_000)),
            ("1.5 KiB", Some(1536)),
            ("0.1KiB", Some(102)),
            ("10kB", Some(10_000)),
            ("10KB", Some(10_000)),
            ("7B", Some(7)),
            ("16PiB", Some(16 << 50)),
            ("16383PiB", Some(16383 << 50)),
            ("16384PiB", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("1.5", None),
            ("GiB", None),
            ("-1GiB", None),
            ("1e9", None),
            ("1..5GiB", None),
            (".5GiB", None),
            ("5.GiB", None),
            ("12 parsecs", None),
            ("1GiB\n", Some(1 << 30)),
            ("1\u{0}GiB", None),
            ("", None),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse(text), bytes, "{text:?}");
        }
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(format(500 << 30), "500GiB");
        assert_eq!(format(1536), "1536");
        assert_eq!(format(3 << 20), "3MiB");
        assert_eq!(format(0), "0");
        assert_eq!(format(u64::MAX), u64::MAX.to_string());
        for bytes in [1, 1023, 1024, 1 << 40, 1_500_000_000_000, u64::MAX] {
            assert_eq!(parse(&format(bytes)), Some(bytes), "{bytes} shown and read back");
        }
    }
}
