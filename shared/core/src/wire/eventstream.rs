//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`)
//! that Bedrock's ConverseStream answers in: each message is a 12-byte prelude
//! (total length, headers length, CRC32 of the two), typed headers, a payload
//! and a CRC32 of everything before it. Per AWS's "Event stream encoding"
//! reference. Malformed input is an `Err`, never a panic.

/// Messages above this size are refused (Bedrock's are a few KiB).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// String-valued headers (other value types are skipped).
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

impl Decoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes of a message that has not fully arrived.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn next_message(&mut self) -> Result<Option<Message>, String> {
        if self.buf.len() < 12 {
            return Ok(None);
        }
        let total = be32(&self.buf[0..4]);
        let headers_len = be32(&self.buf[4..8]);
        if crc32fast::hash(&self.buf[0..8]) as usize != be32(&self.buf[8..12]) {
            return Err("event stream: prelude checksum mismatch".into());
        }
        if !(16..=MAX_MESSAGE).contains(&total) || headers_len > total - 16 {
            return Err(format!("event stream: impossible lengths (total {total}, headers {headers_len})"));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        if crc32fast::hash(&msg[..total - 4]) as usize != be32(&msg[total - 4..]) {
            return Err("event stream: message checksum mismatch".into());
        }
        let headers = parse_headers(&msg[12..12 + headers_len])?;
        Ok(Some(Message { headers, payload: msg[12 + headers_len..total - 4].to_vec() }))
    }
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let short = || "event stream: truncated header".to_string();
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = b[0] as usize;
        let name = b.get(1..1 + name_len).ok_or_else(short)?;
        let name = String::from_utf8_lossy(name).into_owned();
        b = &b[1 + name_len..];
        let kind = *b.first().ok_or_else(short)?;
        b = &b[1..];
        let fixed = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = b.get(0..2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize).ok_or_else(short)?;
                let value = b.get(2..2 + len).ok_or_else(short)?;
                if kind == 7 {
                    out.push((name, String::from_utf8_lossy(value).into_owned()));
                }
                b = &b[2 + len..];
                continue;
            }
            other => return Err(format!("event stream: unknown header type {other}")),
        };
        if b.len() < fixed {
            return Err(short());
        }
        b = &b[fixed..];
    }
    Ok(out)
}

/// One message with string headers (for tests and mocks).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_in_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5), split in 1usize..50) {
            let mut bytes = Vec::new();
            for p in &payloads {
                bytes.extend(encode(&[(":event-type", "contentBlockDelta"), (":message-type", "event")], p));
            }
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                d.push(chunk);
                while let Some(m) = d.next_message().unwrap() {
                    prop_assert_eq!(m.header(":event-type"), Some("contentBlockDelta"));
                    got.push(m.payload);
                }
            }
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), split in 1usize..40) {
            let mut d = Decoder::default();
            for chunk in bytes.chunks(split) {
                d.push(chunk);
                while let Ok(Some(_)) = d.next_message() {}
            }
        }
    }

    #[test]
    fn corrupt_checksums_are_errors() {
        let mut m = encode(&[(":event-type", "x")], b"{}");
        let last = m.len() - 1;
        m[last] ^= 1;
        let mut d = Decoder::default();
        d.push(&m);
        assert!(d.next_message().is_err());
    }
}
