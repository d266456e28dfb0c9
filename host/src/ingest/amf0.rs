//! AMF0, the encoding of RTMP commands: the subset encoders send, decoded
//! within a depth and an element budget so crafted input can exhaust neither
//! the stack nor memory (a 1-byte null decodes to a 32-byte value).

use bytes::{Buf, BufMut, BytesMut};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Number(f64),
    Bool(bool),
    String(String),
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    Array(Vec<Value>),
    Date(f64),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object (or ECMA array).
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum AmfError {
    #[error("amf0 value truncated")]
    Truncated,
    #[error("amf0 marker 0x{0:02x} is not supported")]
    Marker(u8),
    #[error("amf0 nesting deeper than {0} (server.rtmp_amf_max_depth)")]
    TooDeep(usize),
    #[error("amf0 message of more than {0} values (server.rtmp_amf_max_elements)")]
    TooMany(usize),
    #[error("amf0 string is not utf-8")]
    Utf8,
}

/// How much one message may decode to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Values, nested ones and object keys included.
    pub(crate) max_elements: usize,
    pub(crate) max_depth: usize,
}

/// Decodes every value in `buf`, within `budget`.
pub(crate) fn decode_all(mut buf: &[u8], budget: Budget) -> Result<Vec<Value>, AmfError> {
    let mut d = Decoder { budget, left: budget.max_elements };
    let mut out = Vec::new();
    while buf.has_remaining() {
        out.push(d.decode(&mut buf, 0)?);
    }
    Ok(out)
}

struct Decoder {
    budget: Budget,
    /// Elements that may still be decoded.
    left: usize,
}

fn need(buf: &[u8], n: usize) -> Result<(), AmfError> {
    if buf.len() < n { Err(AmfError::Truncated) } else { Ok(()) }
}

fn string(buf: &mut &[u8], len: usize) -> Result<String, AmfError> {
    need(buf, len)?;
    let s = std::str::from_utf8(&buf[..len]).map_err(|_| AmfError::Utf8)?.to_owned();
    buf.advance(len);
    Ok(s)
}

fn short_string(buf: &mut &[u8]) -> Result<String, AmfError> {
    need(buf, 2)?;
    let len = buf.get_u16() as usize;
    string(buf, len)
}

impl Decoder {
    fn properties(&mut self, buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
        let mut props = Vec::new();
        loop {
            need(buf, 3)?;
            if buf[..3] == [0, 0, 9] {
                buf.advance(3);
                return Ok(props);
            }
            let key = short_string(buf)?;
            let value = self.decode(buf, depth + 1)?;
            props.push((key, value));
        }
    }

    fn decode(&mut self, buf: &mut &[u8], depth: usize) -> Result<Value, AmfError> {
        if depth > self.budget.max_depth {
            return Err(AmfError::TooDeep(self.budget.max_depth));
        }
        self.left = self.left.checked_sub(1).ok_or(AmfError::TooMany(self.budget.max_elements))?;
        need(buf, 1)?;
        let marker = buf.get_u8();
        Ok(match marker {
            0x00 => {
                need(buf, 8)?;
                Value::Number(buf.get_f64())
            }
            0x01 => {
                need(buf, 1)?;
                Value::Bool(buf.get_u8() != 0)
            }
            0x02 => Value::String(short_string(buf)?),
            0x03 => Value::Object(self.properties(buf, depth)?),
            0x05 => Value::Null,
            0x06 => Value::Undefined,
            0x08 => {
                need(buf, 4)?;
                buf.advance(4); // the count is a hint; the end marker ends it
                Value::Object(self.properties(buf, depth)?)
            }
            0x0a => {
                need(buf, 4)?;
                let n = buf.get_u32() as usize;
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    items.push(self.decode(buf, depth + 1)?);
                }
                Value::Array(items)
            }
            0x0b => {
                need(buf, 10)?;
                let ms = buf.get_f64();
                buf.advance(2);
                Value::Date(ms)
            }
            0x0c => {
                need(buf, 4)?;
                let len = buf.get_u32() as usize;
                Value::String(string(buf, len)?)
            }
            m => return Err(AmfError::Marker(m)),
        })
    }
}

pub(crate) fn encode(out: &mut BytesMut, v: &Value) {
    match v {
        Value::Number(n) => {
            out.put_u8(0x00);
            out.put_f64(*n);
        }
        Value::Bool(b) => {
            out.put_u8(0x01);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) => {
            out.put_u8(0x02);
            out.put_u16(s.len() as u16);
            out.put_slice(s.as_bytes());
        }
        Value::Object(props) => {
            out.put_u8(0x03);
            for (k, v) in props {
                out.put_u16(k.len() as u16);
                out.put_slice(k.as_bytes());
                encode(out, v);
            }
            out.put_slice(&[0, 0, 9]);
        }
        Value::Null => out.put_u8(0x05),
        Value::Undefined => out.put_u8(0x06),
        Value::Array(items) => {
            out.put_u8(0x0a);
            out.put_u32(items.len() as u32);
            for i in items {
                encode(out, i);
            }
        }
        Value::Date(ms) => {
            out.put_u8(0x0b);
            out.put_f64(*ms);
            out.put_u16(0);
        }
    }
}

/// Builds an object from string keys.
pub(crate) fn object(props: &[(&str, Value)]) -> Value {
    Value::Object(props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Value::String("connect".into()),
            Value::Number(1.0),
            object(&[("app", Value::String("live".into())), ("n", Value::Null), ("b", Value::Bool(true))]),
            Value::Undefined,
            Value::Array(vec![Value::Number(2.5)]),
        ];
        let mut buf = BytesMut::new();
        for v in &values {
            encode(&mut buf, v);
        }
        assert_eq!(decode_all(&buf, BUDGET).unwrap(), values);
    }

    const BUDGET: Budget = Budget { max_elements: 1024, max_depth: 16 };

    #[test]
    fn hostile_input_is_an_error() {
        assert_eq!(decode_all(&[0x02, 0x00, 0x05, b'a'], BUDGET), Err(AmfError::Truncated));
        assert_eq!(decode_all(&[0x11], BUDGET), Err(AmfError::Marker(0x11)));
        let deep: Vec<u8> = std::iter::repeat_n([0x0a, 0, 0, 0, 1], 100).flatten().collect();
        assert_eq!(decode_all(&deep, BUDGET), Err(AmfError::TooDeep(16)));
        assert_eq!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff], BUDGET), Err(AmfError::Truncated));
        // A strict array of 5000 nulls: 5 KB that would decode to 160 KB.
        let mut bomb = vec![0x0a, 0, 0, 0x13, 0x88];
        bomb.extend(std::iter::repeat_n(0x05, 5000));
        assert_eq!(decode_all(&bomb, BUDGET), Err(AmfError::TooMany(1024)));
        // Nulls at the top level count too.
        assert_eq!(decode_all(&[0x05; 1025], BUDGET), Err(AmfError::TooMany(1024)));
        assert_eq!(decode_all(&[0x05; 1024], BUDGET).unwrap().len(), 1024);
    }
}
