//! Server-sent events: an incremental decoder that accepts bytes in any split
//! (CRLF, CR or LF line ends, comments, multi-line data) and a frame encoder.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    start: usize,
    /// The last line ended in `\r`; a `\n` that follows belongs to it.
    skip_lf: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if self.skip_lf && self.start < self.buf.len() {
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.start..];
            let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let line_start = self.start;
            self.start += end + 1;
            if rest[end] == b'\r' {
                self.skip_lf = true;
            }
            let line = &self.buf[line_start..line_start + end];
            if line.is_empty() {
                if let Some(ev) = self.dispatch() {
                    return Some(ev);
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            let value = String::from_utf8_lossy(value);
            match name {
                b"data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(&value);
                    self.has_data = true;
                }
                b"event" => self.event = Some(value.into_owned()),
                _ => {}
            }
        }
    }

    /// At end of stream: an event whose blank line never came is still delivered.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.start < self.buf.len() {
            self.push(b"\n\n");
            return self.next_event();
        }
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent { event, data: std::mem::take(&mut self.data) })
    }
}

/// Appends one `data:` frame (multi-line data gets one `data:` line per line).
pub fn encode_data(out: &mut Vec<u8>, data: &str) {
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dec: &mut SseDecoder) -> Vec<SseEvent> {
        std::iter::from_fn(|| dec.next_event()).collect()
    }

    #[test]
    fn decodes_any_split() {
        let input = b": ping\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: l1\ndata: l2\n\ndata: [DONE]\r\r";
        for split in 0..input.len() {
            let mut dec = SseDecoder::new();
            dec.push(&input[..split]);
            let mut got = all(&mut dec);
            dec.push(&input[split..]);
            got.extend(all(&mut dec));
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].data, "{\"a\":1}");
            assert_eq!(got[1].event.as_deref(), Some("x"));
            assert_eq!(got[1].data, "l1\nl2");
            assert_eq!(got[2].data, "[DONE]");
        }
    }

    #[test]
    fn finish_flushes_unterminated_event() {
        let mut dec = SseDecoder::new();
        dec.push(b"data: tail");
        assert!(dec.next_event().is_none());
        assert_eq!(dec.finish().unwrap().data, "tail");
        assert!(dec.finish().is_none());
    }

    #[test]
    fn encodes_frames() {
        let mut out = Vec::new();
        encode_data(&mut out, "a\nb");
        assert_eq!(out, b"data: a\ndata: b\n\n");
    }
}
