//! The six SBE schemas as data: read once from the XML files this crate carries (byte-exact
//! copies of the protocol's schemas) into fields with their offsets, groups, var data, enums and
//! null values, so that one decoder and one encoder serve every message.
//!
//! Reading the schema rather than generating code keeps each rule in one place. Two of its
//! constructs need care, and both are handled here, where the model is built:
//!
//! * a `<field>` whose type is a var-data composite (discovery's `tag`) is var data: the C and
//!   Julia implementations write such a group with blockLength 0 and a `u32` length plus bytes per
//!   entry (spec digest §4.3, the "tag trap");
//! * a field's own `nullValue` (FrameDescriptor and BridgeFrameChunk `traceId`, null = 0) wins
//!   over the type's default null.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::CodecError;

/// The schema files, in schema-id order.
const SCHEMA_FILES: [(&str, &str); 6] = [
    ("wire", include_str!("../../schema/wire-schema.xml")),
    ("driver", include_str!("../../schema/driver-schema.xml")),
    ("bridge", include_str!("../../schema/bridge-schema.xml")),
    (
        "join-barrier",
        include_str!("../../schema/join-barrier-schema.xml"),
    ),
    ("trace-link", include_str!("../../schema/trace-link-schema.xml")),
    ("discovery", include_str!("../../schema/discovery-schema.xml")),
];

/// An SBE primitive type. The schemas use integers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    /// `char` (one byte).
    Char,
    /// `int8`.
    I8,
    /// `uint8`.
    U8,
    /// `int16`.
    I16,
    /// `uint16`.
    U16,
    /// `int32`.
    I32,
    /// `uint32`.
    U32,
    /// `int64`.
    I64,
    /// `uint64`.
    U64,
}

impl Prim {
    fn parse(s: &str) -> Option<Prim> {
        Some(match s {
            "char" => Prim::Char,
            "int8" => Prim::I8,
            "uint8" => Prim::U8,
            "int16" => Prim::I16,
            "uint16" => Prim::U16,
            "int32" => Prim::I32,
            "uint32" => Prim::U32,
            "int64" => Prim::I64,
            "uint64" => Prim::U64,
            _ => return None,
        })
    }

    /// Bytes on the wire.
    pub const fn size(self) -> usize {
        match self {
            Prim::Char | Prim::I8 | Prim::U8 => 1,
            Prim::I16 | Prim::U16 => 2,
            Prim::I32 | Prim::U32 => 4,
            Prim::I64 | Prim::U64 => 8,
        }
    }

    /// Whether the value is two's-complement signed.
    pub const fn signed(self) -> bool {
        matches!(self, Prim::I8 | Prim::I16 | Prim::I32 | Prim::I64)
    }

    /// Smallest value the type holds.
    pub fn min(self) -> i128 {
        if self.signed() {
            -(1i128 << (self.size() * 8 - 1))
        } else {
            0
        }
    }

    /// Largest value the type holds.
    pub fn max(self) -> i128 {
        if self.signed() {
            (1i128 << (self.size() * 8 - 1)) - 1
        } else {
            (1i128 << (self.size() * 8)) - 1
        }
    }

    /// SBE's default null: the largest unsigned value, the smallest signed one.
    pub fn default_null(self) -> i128 {
        if self.signed() {
            self.min()
        } else {
            self.max()
        }
    }

    /// Reads a little-endian value from the first `size()` bytes of `b`.
    pub(crate) fn read(self, b: &[u8]) -> i128 {
        let mut raw = [0u8; 8];
        raw[..self.size()].copy_from_slice(&b[..self.size()]);
        let u = u64::from_le_bytes(raw);
        if self.signed() {
            let shift = 64 - 8 * self.size() as u32;
            (((u << shift) as i64) >> shift) as i128
        } else {
            u as i128
        }
    }

    /// Writes `v` (already checked to fit) little-endian into the first `size()` bytes of `b`.
    pub(crate) fn write(self, v: i128, b: &mut [u8]) {
        let raw = (v as i64 as u64).to_le_bytes();
        b[..self.size()].copy_from_slice(&raw[..self.size()]);
    }
}

/// Whether a field must hold a value, may hold its null, or is a constant of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Always a value.
    Required,
    /// A value or the null sentinel given here.
    Optional {
        /// The sentinel on the wire.
        null: i128,
    },
    /// Not on the wire: always this value.
    Constant(i128),
}

/// An enum of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumDef {
    /// Its name (`ResponseCode`).
    pub name: String,
    /// Its encoding.
    pub prim: Prim,
    /// Valid values with their names.
    pub values: Vec<(String, i128)>,
}

impl EnumDef {
    /// The name of a value, if it is one of the valid ones.
    pub fn name_of(&self, v: i128) -> Option<&str> {
        self.values.iter().find(|(_, x)| *x == v).map(|(n, _)| n.as_str())
    }

    /// The value of a name.
    pub fn value_of(&self, name: &str) -> Option<i128> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// A fixed field of a message or group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// Its name in the schema (`streamId`).
    pub name: String,
    /// Its id in the schema.
    pub id: u16,
    /// Offset inside the block (fields are packed, no alignment).
    pub offset: usize,
    /// The element type.
    pub prim: Prim,
    /// Elements: 1 for a scalar, N for an array, 0 for a constant.
    pub count: usize,
    /// Required, optional with its null, or constant.
    pub presence: Presence,
    /// The enum this field holds, if any.
    pub enumeration: Option<EnumDef>,
    /// The schema's `minValue`, kept for reference: not enforced (see the decoder).
    pub min: Option<i128>,
    /// Largest valid value (`maxValue`), besides the type's own range.
    pub max: Option<i128>,
}

impl FieldDef {
    /// Bytes the field takes in the block.
    pub fn size(&self) -> usize {
        self.prim.size() * self.count
    }
}

/// A var-data member: a `u32` length, then that many bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDef {
    /// Its name in the schema.
    pub name: String,
    /// Its id in the schema.
    pub id: u16,
    /// Largest length the schema allows (`maxValue` of the length: 2^30, or 256).
    pub max_len: u32,
    /// Whether the bytes are text (US-ASCII) rather than opaque bytes.
    pub text: bool,
}

/// A repeating group: a 4-byte header (`u16 blockLength`, `u16 numInGroup`), then its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    /// Its name in the schema.
    pub name: String,
    /// Its id in the schema.
    pub id: u16,
    /// What each entry holds.
    pub block: BlockDef,
}

/// What a message body or a group entry holds, in wire order: the fixed block, the groups, the
/// var data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockDef {
    /// The fixed fields, packed.
    pub fields: Vec<FieldDef>,
    /// Bytes of the fixed block (the `blockLength` written in headers).
    pub block_length: u16,
    /// The repeating groups, in order.
    pub groups: Vec<GroupDef>,
    /// The var-data members, in order.
    pub data: Vec<DataDef>,
}

impl BlockDef {
    /// The index of a field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The index of a group by name.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// The index of a var-data member by name.
    pub fn data_index(&self, name: &str) -> Option<usize> {
        self.data.iter().position(|d| d.name == name)
    }
}

/// A message of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDef {
    /// Its name (`FrameDescriptor`).
    pub name: String,
    /// Its template id.
    pub template_id: u16,
    /// The id of its schema.
    pub schema_id: u16,
    /// The short name of its schema (`wire`).
    pub schema: &'static str,
    /// Its body.
    pub block: BlockDef,
    /// `Some("v1.1")` for the earlier layouts of the same template that can still be decoded
    /// (they are told apart by blockLength alone) but are never written.
    pub legacy: Option<&'static str>,
}

/// One schema: its id, version and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaDef {
    /// The short name (`wire`, `driver`, `bridge`, `join-barrier`, `trace-link`, `discovery`).
    pub name: &'static str,
    /// The schema id (900…910).
    pub id: u16,
    /// The schema version written in headers; decoders accept versions up to it.
    pub version: u16,
    /// The SBE package (`shm.tensorpool.control`).
    pub package: String,
    /// Its messages, in schema order, then the legacy layouts.
    pub messages: Vec<MessageDef>,
}

/// The six schemas, read on first use.
pub fn schemas() -> &'static [SchemaDef] {
    static SCHEMAS: OnceLock<Vec<SchemaDef>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        SCHEMA_FILES
            .iter()
            .map(|(name, xml)| {
                // The XML ships inside this crate and is tested; failing here is a build defect.
                parse_schema(name, xml).unwrap_or_else(|e| panic!("schema {name} is broken: {e}"))
            })
            .collect()
    })
}

/// The schema with this id.
pub fn schema(id: u16) -> Option<&'static SchemaDef> {
    schemas().iter().find(|s| s.id == id)
}

/// The current (written) layout of a message, found by schema and message name.
pub fn message(schema_name: &str, message: &str) -> Option<&'static MessageDef> {
    schemas()
        .iter()
        .find(|s| s.name == schema_name)?
        .messages
        .iter()
        .find(|m| m.name == message && m.legacy.is_none())
}

/// Reads one schema file into its model. `name` is the short name given to it.
pub fn parse_schema(name: &'static str, xml: &str) -> Result<SchemaDef, CodecError> {
    let bad = |why: String| CodecError::Schema { schema: name, why };
    let doc = roxmltree::Document::parse(xml).map_err(|e| bad(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "messageSchema" {
        return Err(bad("the root element is not messageSchema".into()));
    }
    let num = |node: roxmltree::Node, attr: &str| -> Result<i128, CodecError> {
        let s = node
            .attribute(attr)
            .ok_or_else(|| bad(format!("<{}> has no {attr}", node.tag_name().name())))?;
        s.trim()
            .parse::<i128>()
            .map_err(|_| bad(format!("{attr}={s:?} is not a number")))
    };
    let id = u16::try_from(num(root, "id")?).map_err(|_| bad("schema id out of range".into()))?;
    let version = u16::try_from(num(root, "version")?).map_err(|_| bad("version out of range".into()))?;
    if root.attribute("byteOrder").unwrap_or("littleEndian") != "littleEndian" {
        return Err(bad("only littleEndian schemas are supported".into()));
    }

    // Types: simple types, composites and enums by name.
    let mut types: HashMap<String, TypeDef> = HashMap::new();
    let types_node = root
        .children()
        .find(|n| n.tag_name().name() == "types")
        .ok_or_else(|| bad("no <types>".into()))?;
    for t in types_node.children().filter(|n| n.is_element()) {
        let tname = t
            .attribute("name")
            .ok_or_else(|| bad(format!("a <{}> without a name", t.tag_name().name())))?
            .to_string();
        let def = match t.tag_name().name() {
            "type" => TypeDef::Simple(simple_type(t, &bad, &num)?),
            "enum" => {
                let enc = t.attribute("encodingType").unwrap_or("");
                let prim = Prim::parse(enc).ok_or_else(|| bad(format!("enum {tname}: encoding {enc:?}")))?;
                let mut values = Vec::new();
                for v in t.children().filter(|n| n.has_tag_name("validValue")) {
                    let vname = v
                        .attribute("name")
                        .ok_or_else(|| bad(format!("enum {tname}: a value without a name")))?;
                    let text = v.text().unwrap_or("").trim();
                    let val = text
                        .parse::<i128>()
                        .map_err(|_| bad(format!("enum {tname}.{vname} = {text:?}")))?;
                    values.push((vname.to_string(), val));
                }
                TypeDef::Enum(EnumDef {
                    name: tname.clone(),
                    prim,
                    values,
                })
            }
            "composite" => {
                let members: Vec<roxmltree::Node> = t.children().filter(|n| n.has_tag_name("type")).collect();
                let var = members.iter().find(|m| m.attribute("name") == Some("varData"));
                let len = members.iter().find(|m| m.attribute("name") == Some("length"));
                match (var, len) {
                    (Some(var), Some(len)) => {
                        let max = len
                            .attribute("maxValue")
                            .map(|_| num(*len, "maxValue"))
                            .transpose()?;
                        let prim = len.attribute("primitiveType").and_then(Prim::parse);
                        if prim != Some(Prim::U32) {
                            return Err(bad(format!("{tname}: var-data length must be uint32")));
                        }
                        TypeDef::VarData {
                            max_len: max
                                .map_or(Ok(1 << 30), u32::try_from)
                                .map_err(|_| bad(format!("{tname}: maxValue")))?,
                            text: var.attribute("characterEncoding").is_some()
                                || tname.to_ascii_lowercase().contains("ascii"),
                        }
                    }
                    _ => TypeDef::Composite,
                }
            }
            other => return Err(bad(format!("unsupported type element <{other}>"))),
        };
        types.insert(tname, def);
    }
    for builtin in [
        "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    ] {
        types.entry(builtin.to_string()).or_insert_with(|| {
            TypeDef::Simple(SimpleType {
                prim: Prim::parse(builtin).expect("builtin"),
                count: 1,
                constant: None,
                null: None,
                min: None,
                max: None,
            })
        });
    }

    let mut messages = Vec::new();
    for m in root.children().filter(|n| n.has_tag_name("message")) {
        let mname = m
            .attribute("name")
            .ok_or_else(|| bad("a message without a name".into()))?;
        let template_id = u16::try_from(num(m, "id")?).map_err(|_| bad(format!("{mname}: id")))?;
        let block = read_block(m, &types, &bad, &num).map_err(|e| bad(format!("{mname}: {}", e.why())))?;
        if let Some(declared) = m.attribute("blockLength") {
            if declared.parse::<u16>().ok() != Some(block.block_length) {
                return Err(bad(format!(
                    "{mname}: blockLength {declared} declared, fields take {}",
                    block.block_length
                )));
            }
        }
        messages.push(MessageDef {
            name: mname.to_string(),
            template_id,
            schema_id: id,
            schema: name,
            block,
            legacy: None,
        });
    }
    if id == super::WIRE_SCHEMA_ID {
        messages.extend(legacy_wire_layouts(&messages));
    }
    Ok(SchemaDef {
        name,
        id,
        version,
        package: root.attribute("package").unwrap_or("").to_string(),
        messages,
    })
}

#[derive(Debug, Clone)]
struct SimpleType {
    prim: Prim,
    count: usize,
    constant: Option<i128>,
    null: Option<i128>,
    min: Option<i128>,
    max: Option<i128>,
}

#[derive(Debug, Clone)]
enum TypeDef {
    Simple(SimpleType),
    Enum(EnumDef),
    VarData { max_len: u32, text: bool },
    Composite,
}

type Bad<'a> = dyn Fn(String) -> CodecError + 'a;
type Num<'a> = dyn Fn(roxmltree::Node, &str) -> Result<i128, CodecError> + 'a;

fn simple_type(t: roxmltree::Node, bad: &Bad, num: &Num) -> Result<SimpleType, CodecError> {
    let name = t.attribute("name").unwrap_or("?");
    let prim = t
        .attribute("primitiveType")
        .and_then(Prim::parse)
        .ok_or_else(|| bad(format!("type {name}: unsupported primitiveType")))?;
    let count = match t.attribute("length") {
        Some(_) => usize::try_from(num(t, "length")?).map_err(|_| bad(format!("type {name}: length")))?,
        None => 1,
    };
    let constant = if t.attribute("presence") == Some("constant") {
        let text = t.text().unwrap_or("").trim();
        Some(
            text.parse::<i128>()
                .map_err(|_| bad(format!("constant {name} = {text:?}")))?,
        )
    } else {
        None
    };
    let opt = |a: &str| t.attribute(a).map(|_| num(t, a)).transpose();
    Ok(SimpleType {
        prim,
        count,
        constant,
        null: opt("nullValue")?,
        min: opt("minValue")?,
        max: opt("maxValue")?,
    })
}

/// Reads the fields, groups and var data under a `<message>` or `<group>` element.
fn read_block(
    node: roxmltree::Node,
    types: &HashMap<String, TypeDef>,
    bad: &Bad,
    num: &Num,
) -> Result<BlockDef, CodecError> {
    let mut block = BlockDef::default();
    let mut offset = 0usize;
    for c in node.children().filter(|n| n.is_element()) {
        let cname = c
            .attribute("name")
            .ok_or_else(|| bad("a member without a name".into()))?;
        let id = u16::try_from(num(c, "id")?).map_err(|_| bad(format!("{cname}: id")))?;
        let tname = c.attribute("type").unwrap_or("");
        match c.tag_name().name() {
            "field" => {
                let ty = types
                    .get(tname)
                    .ok_or_else(|| bad(format!("{cname}: unknown type {tname:?}")))?;
                if (!block.groups.is_empty() || !block.data.is_empty())
                    && !matches!(ty, TypeDef::VarData { .. })
                {
                    return Err(bad(format!("{cname}: a fixed field after a group or var data")));
                }
                let optional = c.attribute("presence") == Some("optional");
                let field_null = c
                    .attribute("nullValue")
                    .map(|_| num(c, "nullValue"))
                    .transpose()?;
                let field = match ty {
                    // The discovery tag trap: a var-data composite used as a field is var data.
                    TypeDef::VarData { max_len, text } => {
                        block.data.push(DataDef {
                            name: cname.to_string(),
                            id,
                            max_len: *max_len,
                            text: *text,
                        });
                        continue;
                    }
                    TypeDef::Composite => {
                        return Err(bad(format!("{cname}: composite fields are not supported")))
                    }
                    TypeDef::Enum(e) => FieldDef {
                        name: cname.to_string(),
                        id,
                        offset,
                        prim: e.prim,
                        count: 1,
                        presence: if optional {
                            Presence::Optional {
                                null: field_null.unwrap_or(e.prim.default_null()),
                            }
                        } else {
                            Presence::Required
                        },
                        enumeration: Some(e.clone()),
                        min: None,
                        max: None,
                    },
                    TypeDef::Simple(s) => {
                        // A `length` on the field itself (the pads) overrides the type's.
                        let count = match c.attribute("length") {
                            Some(_) => usize::try_from(num(c, "length")?)
                                .map_err(|_| bad(format!("{cname}: length")))?,
                            None => s.count,
                        };
                        let presence = match s.constant {
                            Some(v) => Presence::Constant(v),
                            None if optional || c.attribute("presence") == Some("optional") => {
                                Presence::Optional {
                                    null: field_null.or(s.null).unwrap_or(s.prim.default_null()),
                                }
                            }
                            None => Presence::Required,
                        };
                        let opt = |a: &str| c.attribute(a).map(|_| num(c, a)).transpose();
                        FieldDef {
                            name: cname.to_string(),
                            id,
                            offset,
                            prim: s.prim,
                            count: if s.constant.is_some() { 0 } else { count },
                            presence,
                            enumeration: None,
                            min: opt("minValue")?.or(s.min),
                            max: opt("maxValue")?.or(s.max),
                        }
                    }
                };
                offset += field.size();
                block.fields.push(field);
            }
            "group" => {
                if !block.data.is_empty() {
                    return Err(bad(format!("{cname}: a group after var data")));
                }
                if c.attribute("dimensionType").unwrap_or("groupSizeEncoding") != "groupSizeEncoding" {
                    return Err(bad(format!(
                        "{cname}: only groupSizeEncoding groups are supported"
                    )));
                }
                let inner = read_block(c, types, bad, num)?;
                block.groups.push(GroupDef {
                    name: cname.to_string(),
                    id,
                    block: inner,
                });
            }
            "data" => match types.get(tname) {
                Some(TypeDef::VarData { max_len, text }) => block.data.push(DataDef {
                    name: cname.to_string(),
                    id,
                    max_len: *max_len,
                    text: *text,
                }),
                _ => return Err(bad(format!("{cname}: {tname:?} is not a var-data type"))),
            },
            other => return Err(bad(format!("unsupported member <{other}>"))),
        }
    }
    block.block_length = u16::try_from(offset).map_err(|_| bad("block longer than 65535 bytes".into()))?;
    Ok(block)
}

/// The v1.1 layouts of FrameDescriptor (block 36) and FrameProgress (block 33): same schema id,
/// version and template ids as v1.2, told apart only by blockLength (spec digest §8).
fn legacy_wire_layouts(current: &[MessageDef]) -> Vec<MessageDef> {
    let field =
        |name: &str, offset: usize, prim: Prim, presence: Presence, enumeration: Option<EnumDef>| FieldDef {
            name: name.to_string(),
            id: 0,
            offset,
            prim,
            count: 1,
            presence,
            enumeration,
            min: None,
            max: None,
        };
    let state_enum = current
        .iter()
        .find(|m| m.name == "FrameProgress")
        .and_then(|m| m.block.fields.iter().find(|f| f.name == "state"))
        .and_then(|f| f.enumeration.clone());
    let req = Presence::Required;
    let ones64 = Presence::Optional {
        null: Prim::U64.max(),
    };
    let ones32 = Presence::Optional {
        null: Prim::U32.max(),
    };
    let legacy = |name: &str, template_id: u16, fields: Vec<FieldDef>| {
        let block_length = fields.iter().map(FieldDef::size).sum::<usize>() as u16;
        MessageDef {
            name: name.to_string(),
            template_id,
            schema_id: super::WIRE_SCHEMA_ID,
            schema: "wire",
            block: BlockDef {
                fields,
                block_length,
                groups: Vec::new(),
                data: Vec::new(),
            },
            legacy: Some("v1.1"),
        }
    };
    vec![
        legacy(
            "FrameDescriptor",
            4,
            vec![
                field("streamId", 0, Prim::U32, req, None),
                field("epoch", 4, Prim::U64, req, None),
                field("seq", 12, Prim::U64, req, None),
                field("headerIndex", 20, Prim::U32, req, None),
                field("timestampNs", 24, Prim::U64, ones64, None),
                field("metaVersion", 32, Prim::U32, ones32, None),
            ],
        ),
        legacy(
            "FrameProgress",
            11,
            vec![
                field("streamId", 0, Prim::U32, req, None),
                field("epoch", 4, Prim::U64, req, None),
                field("frameId", 12, Prim::U64, req, None),
                field("headerIndex", 20, Prim::U32, req, None),
                field("payloadBytesFilled", 24, Prim::U64, req, None),
                field("state", 32, Prim::U8, req, state_enum),
            ],
        ),
    ]
}

impl CodecError {
    fn why(&self) -> String {
        match self {
            CodecError::Schema { why, .. } => why.clone(),
            other => other.to_string(),
        }
    }
}
