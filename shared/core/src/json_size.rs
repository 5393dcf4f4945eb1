//! How many values a JSON text holds, counted on its bytes before it is
//! parsed: a parsed value costs tens of bytes however few it took to write
//! (`1,` is two bytes and a 32-byte node), so a body of tiny values is refused
//! before it can grow to many times its size in memory.

/// An upper bound on the values in `raw`: one, plus one per `,`, `[` and `{`
/// outside strings (each further value follows a comma or opens a container).
/// Linear, no allocation; invalid JSON gets some count and fails its parse later.
pub fn count_values(raw: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in raw {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => n += 1,
            _ => {}
        }
    }
    n
}

/// Whether `raw` may hold more than `max` values: texts shorter than two bytes
/// a value cannot, so only large bodies are scanned.
pub fn exceeds(raw: &[u8], max: usize) -> bool {
    raw.len() / 2 > max && count_values(raw) > max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_outside_strings_only() {
        assert_eq!(count_values(br#"{"a":[1,2,3],"b":{"c":"x,[{"}}"#), 1 + 6);
        assert_eq!(count_values(br#""a\",b""#), 1);
        let many = format!("[{}1]", "1,".repeat(1000));
        assert_eq!(count_values(many.as_bytes()), 1002);
        assert!(exceeds(many.as_bytes(), 500));
        assert!(!exceeds(many.as_bytes(), 5000));
        assert_eq!(count_values(b"[1,1]"), 3);
        assert!(
            !exceeds(b"[1,1]", 2),
            "bodies under twice the cap are not scanned: their values cannot outgrow them much"
        );
    }
}
