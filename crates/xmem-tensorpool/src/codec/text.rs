//! Messages as text: an indented human-readable form and JSON (fields in schema order).

use std::fmt::Write as _;

use super::schema::{BlockDef, DataDef, FieldDef};
use super::{Entry, Message, Value};

/// The message as indented text, one field per line.
pub fn to_text(m: &Message) -> String {
    let mut out = String::new();
    let layout = m.def.legacy.unwrap_or("v1.2");
    let _ = writeln!(
        out,
        "{} {} (schema {}, template {}, version {}, blockLength {}, layout {layout})",
        m.def.schema, m.def.name, m.def.schema_id, m.def.template_id, m.version, m.def.block.block_length
    );
    entry_text(&mut out, &m.def.block, &m.body, 1);
    out
}

fn entry_text(out: &mut String, def: &BlockDef, e: &Entry, depth: usize) {
    let pad = "  ".repeat(depth);
    for (f, v) in def.fields.iter().zip(&e.fields) {
        let _ = writeln!(out, "{pad}{}: {}", f.name, value_text(f, v));
    }
    for (g, entries) in def.groups.iter().zip(&e.groups) {
        let _ = writeln!(
            out,
            "{pad}{}: {} entr{}",
            g.name,
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        );
        for (i, entry) in entries.iter().enumerate() {
            let _ = writeln!(out, "{pad}  [{i}]");
            entry_text(out, &g.block, entry, depth + 2);
        }
    }
    for (d, bytes) in def.data.iter().zip(&e.data) {
        let _ = writeln!(out, "{pad}{}: {}", d.name, data_text(d, bytes));
    }
}

fn value_text(f: &FieldDef, v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Int(x) => match f.enumeration.as_ref().and_then(|e| e.name_of(*x)) {
            Some(name) => format!("{x} ({name})"),
            None => x.to_string(),
        },
        Value::Array(xs) if xs.iter().all(|x| *x == 0) && xs.len() > 8 => format!("{} zero bytes", xs.len()),
        Value::Array(xs) => format!("{xs:?}"),
    }
}

/// Text as a quoted string, anything else as hex.
fn data_text(d: &DataDef, bytes: &[u8]) -> String {
    match printable(d, bytes) {
        Some(s) => format!("{s:?}"),
        None if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
            format!(
                "{} bytes: {} ({:?})",
                bytes.len(),
                hex(bytes),
                String::from_utf8_lossy(bytes)
            )
        }
        None => format!("{} bytes: {}", bytes.len(), hex(bytes)),
    }
}

fn printable<'a>(d: &DataDef, bytes: &'a [u8]) -> Option<&'a str> {
    if !d.text {
        return None;
    }
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.chars().all(|c| c.is_ascii_graphic() || c == ' '))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The message as JSON: `schema`, `schemaId`, `message`, `templateId`, `version`, `layout`, and
/// `fields` in schema order. Enums are their names (numbers when not a valid value), nulls are
/// `null`, text var data is a string and other bytes are `{"hex": "…"}`.
pub fn to_json(m: &Message) -> serde_json::Value {
    let mut top = serde_json::Map::new();
    top.insert("schema".into(), m.def.schema.into());
    top.insert("schemaId".into(), m.def.schema_id.into());
    top.insert("message".into(), m.def.name.clone().into());
    top.insert("templateId".into(), m.def.template_id.into());
    top.insert("version".into(), m.version.into());
    top.insert("layout".into(), m.def.legacy.unwrap_or("v1.2").into());
    top.insert("fields".into(), entry_json(&m.def.block, &m.body));
    serde_json::Value::Object(top)
}

fn entry_json(def: &BlockDef, e: &Entry) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for (f, v) in def.fields.iter().zip(&e.fields) {
        let j = match v {
            Value::Null => serde_json::Value::Null,
            Value::Int(x) => match f.enumeration.as_ref().and_then(|en| en.name_of(*x)) {
                Some(name) => name.into(),
                None => int_json(*x),
            },
            Value::Array(xs) => xs.iter().map(|x| int_json(*x)).collect(),
        };
        obj.insert(f.name.clone(), j);
    }
    for (g, entries) in def.groups.iter().zip(&e.groups) {
        obj.insert(
            g.name.clone(),
            entries.iter().map(|x| entry_json(&g.block, x)).collect(),
        );
    }
    for (d, bytes) in def.data.iter().zip(&e.data) {
        let j = match printable(d, bytes) {
            Some(s) => s.into(),
            None => serde_json::json!({ "hex": hex(bytes) }),
        };
        obj.insert(d.name.clone(), j);
    }
    serde_json::Value::Object(obj)
}

/// Every value of the schemas fits an `i64` or a `u64`.
fn int_json(x: i128) -> serde_json::Value {
    match (i64::try_from(x), u64::try_from(x)) {
        (Ok(v), _) => v.into(),
        (_, Ok(v)) => v.into(),
        _ => x.to_string().into(),
    }
}
