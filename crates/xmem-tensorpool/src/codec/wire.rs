//! The generic decoder and encoder: message header, fixed block, groups, var data.

use super::schema::{self, BlockDef, DataDef, FieldDef, MessageDef, Presence};
use super::{CodecError, Entry, Header, Message, Value, MESSAGE_HEADER_LEN};

/// A cursor over the input that never reads past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], CodecError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(CodecError::Truncated {
                what: what(),
                at: self.pos,
                need: n,
                got: left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, CodecError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Reads the 8-byte message header without checking it.
pub fn peek_header(buf: &[u8]) -> Result<Header, CodecError> {
    let mut r = Reader { buf, pos: 0 };
    let what = || "message header".to_string();
    Ok(Header {
        block_length: r.u16(what)?,
        template_id: r.u16(what)?,
        schema_id: r.u16(what)?,
        version: r.u16(what)?,
    })
}

/// Finds the layout a header names: schema, template, version and exact block length checked.
fn layout_of(h: &Header) -> Result<&'static MessageDef, CodecError> {
    let schema = schema::schema(h.schema_id).ok_or(CodecError::UnknownSchema(h.schema_id))?;
    let mut candidates = schema
        .messages
        .iter()
        .filter(|m| m.template_id == h.template_id)
        .peekable();
    let first = *candidates.peek().ok_or(CodecError::UnknownTemplate {
        schema: h.schema_id,
        template: h.template_id,
    })?;
    // Version 0 never existed (each schema was published as 1), so it is refused like a newer
    // one: accepting it would re-encode another version than was read.
    if h.version != schema.version {
        return Err(CodecError::Version {
            message: first.name.clone(),
            got: h.version,
            max: schema.version,
        });
    }
    candidates
        .find(|m| m.block.block_length == h.block_length)
        .ok_or_else(|| CodecError::BlockLength {
            what: first.name.clone(),
            got: h.block_length,
            want: first.block.block_length,
        })
}

/// Decodes one message at the start of `buf`; returns it and the bytes it took.
///
/// Bytes after the message are left alone (see [`decode_exact`] to refuse them).
pub fn decode(buf: &[u8]) -> Result<(Message, usize), CodecError> {
    let header = peek_header(buf)?;
    let def = layout_of(&header)?;
    let mut r = Reader {
        buf,
        pos: MESSAGE_HEADER_LEN,
    };
    let body = read_entry(&mut r, &def.block, &def.name)?;
    Ok((
        Message {
            def,
            version: header.version,
            body,
        },
        r.pos,
    ))
}

/// Decodes `buf` as exactly one message: trailing bytes are an error.
pub fn decode_exact(buf: &[u8]) -> Result<Message, CodecError> {
    let (m, used) = decode(buf)?;
    if used != buf.len() {
        return Err(CodecError::Trailing(buf.len() - used));
    }
    Ok(m)
}

fn read_entry(r: &mut Reader, def: &BlockDef, path: &str) -> Result<Entry, CodecError> {
    let block = r.take(def.block_length as usize, || format!("{path}: fixed block"))?;
    let mut fields = Vec::with_capacity(def.fields.len());
    for f in &def.fields {
        let b = &block[f.offset..f.offset + f.size()];
        let v = match (f.presence, f.count) {
            (Presence::Constant(c), _) => Value::Int(c),
            (_, 1) => {
                let v = f.prim.read(b);
                match f.presence {
                    Presence::Optional { null } if v == null => Value::Null,
                    _ => {
                        check_value(f, v, path)?;
                        Value::Int(v)
                    }
                }
            }
            (_, n) => Value::Array((0..n).map(|i| f.prim.read(&b[i * f.prim.size()..])).collect()),
        };
        fields.push(v);
    }
    let mut groups = Vec::with_capacity(def.groups.len());
    for g in &def.groups {
        let gpath = format!("{path}.{}", g.name);
        let block_length = r.u16(|| format!("{gpath}: group header"))?;
        let count = r.u16(|| format!("{gpath}: group header"))?;
        if block_length != g.block.block_length {
            return Err(CodecError::BlockLength {
                what: gpath,
                got: block_length,
                want: g.block.block_length,
            });
        }
        // Every entry takes at least its block or a var-data length, so `count` cannot make us
        // allocate far beyond what the input holds.
        let mut entries = Vec::new();
        for i in 0..count {
            entries.push(read_entry(r, &g.block, &format!("{gpath}[{i}]"))?);
        }
        groups.push(entries);
    }
    let mut data = Vec::with_capacity(def.data.len());
    for d in &def.data {
        let len_bytes = r.take(4, || format!("{path}.{}: length", d.name))?;
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        check_data_len(d, len as u64, path)?;
        let bytes = r.take(len as usize, || format!("{path}.{}", d.name))?;
        data.push(bytes.to_vec());
    }
    Ok(Entry { fields, groups, data })
}

/// The rules of a scalar field beyond its type: enum values and `maxValue`.
///
/// `minValue` is not enforced: its one use (TensorHeader `progressStrideBytes` ≥ 1) is broken by
/// the C writer whenever the progress unit is NONE, and the tensor validator applies the real rule.
fn check_value(f: &FieldDef, v: i128, path: &str) -> Result<(), CodecError> {
    let bad = |why: String| CodecError::BadValue {
        field: format!("{path}.{}", f.name),
        value: v,
        why,
    };
    if v < f.prim.min() || v > f.prim.max() {
        return Err(bad(format!("does not fit {:?}", f.prim)));
    }
    if let Some(e) = &f.enumeration {
        if e.name_of(v).is_none() {
            return Err(bad(format!("not a valid {}", e.name)));
        }
    }
    if let Some(max) = f.max {
        if v > max {
            return Err(bad(format!("above the schema's maxValue {max}")));
        }
    }
    Ok(())
}

fn check_data_len(d: &DataDef, len: u64, path: &str) -> Result<(), CodecError> {
    if len > d.max_len as u64 {
        return Err(CodecError::DataTooLong {
            field: format!("{path}.{}", d.name),
            len,
            max: d.max_len,
        });
    }
    Ok(())
}

/// Encodes a message with its header. Legacy (v1.1) layouts are never written.
pub fn encode(m: &Message) -> Result<Vec<u8>, CodecError> {
    if let Some(v) = m.def.legacy {
        return Err(CodecError::Shape(format!(
            "{} {v} is decoded only; encode the v1.2 layout",
            m.def.name
        )));
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&m.def.block.block_length.to_le_bytes());
    out.extend_from_slice(&m.def.template_id.to_le_bytes());
    out.extend_from_slice(&m.def.schema_id.to_le_bytes());
    out.extend_from_slice(&m.version.to_le_bytes());
    write_entry(&mut out, &m.def.block, &m.body, &m.def.name)?;
    Ok(out)
}

fn write_entry(out: &mut Vec<u8>, def: &BlockDef, e: &Entry, path: &str) -> Result<(), CodecError> {
    let shape = |what: &str, want: usize, got: usize| {
        CodecError::Shape(format!("{path}: {want} {what} in the schema, {got} given"))
    };
    if e.fields.len() != def.fields.len() {
        return Err(shape("fields", def.fields.len(), e.fields.len()));
    }
    if e.groups.len() != def.groups.len() {
        return Err(shape("groups", def.groups.len(), e.groups.len()));
    }
    if e.data.len() != def.data.len() {
        return Err(shape("var-data members", def.data.len(), e.data.len()));
    }
    let start = out.len();
    out.resize(start + def.block_length as usize, 0);
    for (f, v) in def.fields.iter().zip(&e.fields) {
        let at = start + f.offset;
        let fpath = || format!("{path}.{}", f.name);
        match (f.presence, v) {
            (Presence::Constant(c), Value::Int(x)) if *x == c => {}
            (Presence::Constant(c), _) => {
                return Err(CodecError::Shape(format!("{} is the constant {c}", fpath())));
            }
            (Presence::Optional { null }, Value::Null) => f.prim.write(null, &mut out[at..]),
            (Presence::Required, Value::Null) => {
                return Err(CodecError::Shape(format!("{} is required, not null", fpath())));
            }
            (_, Value::Int(x)) if f.count == 1 => {
                check_value(f, *x, path)?;
                if matches!(f.presence, Presence::Optional { null } if null == *x) {
                    return Err(CodecError::BadValue {
                        field: fpath(),
                        value: *x,
                        why: "is this field's null value; give Value::Null".into(),
                    });
                }
                f.prim.write(*x, &mut out[at..]);
            }
            (_, Value::Array(xs)) if xs.len() == f.count => {
                for (i, x) in xs.iter().enumerate() {
                    if *x < f.prim.min() || *x > f.prim.max() {
                        return Err(CodecError::BadValue {
                            field: format!("{}[{i}]", fpath()),
                            value: *x,
                            why: format!("does not fit {:?}", f.prim),
                        });
                    }
                    f.prim.write(*x, &mut out[at + i * f.prim.size()..]);
                }
            }
            _ => {
                return Err(CodecError::Shape(format!(
                    "{}: {} value(s) of {:?} expected",
                    fpath(),
                    f.count,
                    f.prim
                )))
            }
        }
    }
    for (g, entries) in def.groups.iter().zip(&e.groups) {
        let gpath = format!("{path}.{}", g.name);
        let count = u16::try_from(entries.len())
            .map_err(|_| CodecError::Shape(format!("{gpath}: {} entries, at most 65535", entries.len())))?;
        out.extend_from_slice(&g.block.block_length.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for (i, entry) in entries.iter().enumerate() {
            write_entry(out, &g.block, entry, &format!("{gpath}[{i}]"))?;
        }
    }
    for (d, bytes) in def.data.iter().zip(&e.data) {
        check_data_len(d, bytes.len() as u64, path)?;
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    Ok(())
}
