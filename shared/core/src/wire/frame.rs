//! Splits an upstream byte stream into units (one JSON document each),
//! whatever the framing: SSE events, or the elements of a JSON array sent
//! piece by piece (Gemini's `streamGenerateContent` without `alt=sse`).

use crate::sse::SseDecoder;

/// One framed unit: the SSE event name (or other frame label) and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub event: Option<String>,
    pub data: String,
}

/// Finds the top-level elements of a JSON array as they complete, tracking
/// only nesting depth and string state — no document is parsed here.
#[derive(Debug, Default)]
pub struct JsonArrayDecoder {
    buf: Vec<u8>,
    /// Scan position in `buf`.
    pos: usize,
    /// Start of the current element, when inside one.
    start: Option<usize>,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl JsonArrayDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    pub fn next_unit(&mut self) -> Option<Unit> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    // Depth 0 is outside the array, 1 inside it.
                    if self.depth == 1 && b == b'{' {
                        self.start = Some(self.pos - 1);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 && b == b'}' {
                        if let Some(s) = self.start.take() {
                            let data = String::from_utf8_lossy(&self.buf[s..self.pos]).into_owned();
                            self.buf.drain(..self.pos);
                            self.pos = 0;
                            return Some(Unit { event: None, data });
                        }
                    }
                }
                _ => {}
            }
        }
        if self.start.is_none() {
            self.buf.clear();
            self.pos = 0;
        }
        None
    }

    /// Bytes of an element that never completed.
    pub fn leftover(&self) -> bool {
        self.start.is_some()
    }
}

#[derive(Debug)]
pub enum Framer {
    Sse(SseDecoder),
    JsonArray(JsonArrayDecoder),
    /// AWS event-stream messages: the unit's `event` is the `:event-type`
    /// (or `exception` for error messages), its data the JSON payload.
    EventStream(super::eventstream::Decoder),
    /// After a corrupt frame: everything else is dropped.
    Broken,
}

impl Framer {
    pub fn push(&mut self, chunk: &[u8]) {
        match self {
            Framer::Sse(d) => d.push(chunk),
            Framer::JsonArray(d) => d.push(chunk),
            Framer::EventStream(d) => d.push(chunk),
            Framer::Broken => {}
        }
    }

    pub fn next_unit(&mut self) -> Option<Unit> {
        match self {
            Framer::Sse(d) => d.next_event().map(|e| Unit { event: e.event, data: e.data }),
            Framer::JsonArray(d) => d.next_unit(),
            Framer::Broken => None,
            Framer::EventStream(d) => match d.next_message() {
                Ok(Some(m)) => {
                    let event = match m.header(":message-type") {
                        Some("exception") | Some("error") => "exception".to_string(),
                        _ => m.header(":event-type").unwrap_or("").to_string(),
                    };
                    Some(Unit { event: Some(event), data: String::from_utf8_lossy(&m.payload).into_owned() })
                }
                Ok(None) => None,
                Err(e) => {
                    // Nothing after a corrupt frame can be trusted: report it once, then read no more.
                    *self = Framer::Broken;
                    let data = serde_json::json!({ "message": e }).to_string();
                    Some(Unit { event: Some("exception".into()), data })
                }
            },
        }
    }

    /// At the end of the stream: a last unit whose terminator never came.
    pub fn finish(&mut self) -> Option<Unit> {
        match self {
            Framer::Sse(d) => d.finish().map(|e| Unit { event: e.event, data: e.data }),
            Framer::JsonArray(_) | Framer::EventStream(_) | Framer::Broken => None,
        }
    }

    /// The stream ended inside a unit (a truncated upstream answer).
    pub fn truncated(&self) -> bool {
        match self {
            Framer::Sse(_) => false,
            Framer::JsonArray(d) => d.leftover(),
            Framer::EventStream(d) => d.pending(),
            Framer::Broken => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_elements_in_any_split() {
        let input = br#"[{"a":"x}\"]"},
{"b":[1,{"c":2}]}
,{"d":"]"}]"#;
        for split in 0..input.len() {
            let mut d = JsonArrayDecoder::default();
            d.push(&input[..split]);
            let mut got: Vec<String> = std::iter::from_fn(|| d.next_unit()).map(|u| u.data).collect();
            d.push(&input[split..]);
            got.extend(std::iter::from_fn(|| d.next_unit()).map(|u| u.data));
            assert_eq!(got, [r#"{"a":"x}\"]"}"#, r#"{"b":[1,{"c":2}]}"#, r#"{"d":"]"}"#], "split {split}");
            assert!(!d.leftover());
        }
    }

    #[test]
    fn truncated_element_is_reported() {
        let mut d = JsonArrayDecoder::default();
        d.push(br#"[{"a":1},{"b":"#);
        assert_eq!(d.next_unit().unwrap().data, r#"{"a":1}"#);
        assert!(d.next_unit().is_none());
        assert!(d.leftover());
    }
}
