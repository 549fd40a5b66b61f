//! SBE codecs for the six schemas of the protocol family: wire (900), driver (901), bridge (902),
//! join-barrier (903), trace-link (904) and discovery (910).
//!
//! One decoder and one encoder, driven by the schemas themselves ([`schema`]), serve every
//! message; [`Message`] holds the decoded values in schema order. The typed messages that travel
//! per frame ([`FrameDescriptor`], [`FrameProgress`]) have their own fixed-offset codecs in
//! [`typed`], checked against the generic one by the tests.
//!
//! Decoding fails closed, as the C decoders do: the header's schema id, template id and version
//! are checked (the version must be 1: the C decoders also take 0, which no schema of the family
//! ever was and no implementation writes, and which would re-encode as 1), every block length must be exactly the schema's (the v1.1
//! FrameDescriptor and FrameProgress are recognised by theirs and decoded as legacy layouts),
//! every enum value must be a valid one, every length must fit the bytes that follow, and no
//! input can panic. Encoding writes exactly those block lengths and zero-fills pads.

pub mod schema;
pub mod text;
pub mod typed;
mod wire;

pub use schema::{schemas, BlockDef, DataDef, FieldDef, GroupDef, MessageDef, Prim, SchemaDef};
pub use typed::{FrameDescriptor, FrameProgress, PoolAnnounce, ProgressState, ShmPoolAnnounce};
pub use wire::{decode, decode_exact, encode, peek_header};

/// Schema id of the wire (control) schema.
pub const WIRE_SCHEMA_ID: u16 = 900;
/// Schema id of the driver schema.
pub const DRIVER_SCHEMA_ID: u16 = 901;
/// Schema id of the bridge schema.
pub const BRIDGE_SCHEMA_ID: u16 = 902;
/// Schema id of the join-barrier (merge map) schema.
pub const JOIN_BARRIER_SCHEMA_ID: u16 = 903;
/// Schema id of the trace-link schema.
pub const TRACE_LINK_SCHEMA_ID: u16 = 904;
/// Schema id of the discovery schema.
pub const DISCOVERY_SCHEMA_ID: u16 = 910;
/// Bytes of the SBE message header: blockLength, templateId, schemaId, version (u16 each).
pub const MESSAGE_HEADER_LEN: usize = 8;
/// Bytes of a group header: blockLength, numInGroup (u16 each).
pub const GROUP_HEADER_LEN: usize = 4;

/// The 8-byte SBE message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the message's fixed block.
    pub block_length: u16,
    /// The message within its schema.
    pub template_id: u16,
    /// The schema.
    pub schema_id: u16,
    /// The schema version the sender wrote.
    pub version: u16,
}

/// Why bytes are not a valid message, or values cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ends before what the message declares.
    #[error("truncated: {what} needs {need} bytes at offset {at}, {got} left")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        at: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        got: usize,
    },
    /// A schema id that is none of the six.
    #[error("unknown schema id {0}: not an SHM Tensor Pool message (known: 900-904, 910)")]
    UnknownSchema(u16),
    /// A template id the schema does not have.
    #[error("schema {schema} has no template {template}")]
    UnknownTemplate {
        /// The schema id.
        schema: u16,
        /// The template id.
        template: u16,
    },
    /// A header version other than the schema's: newer (not understood yet), or 0, which no
    /// schema of the family ever had and no implementation writes.
    #[error("{message}: version {got}, but this schema has only version {max}; the sender is newer than this decoder or not a tensor-pool peer")]
    Version {
        /// The message.
        message: String,
        /// The version in the header.
        got: u16,
        /// The version understood (every schema of the family is at version 1).
        max: u16,
    },
    /// A block length that is not exactly the schema's.
    #[error("{what}: blockLength {got}, the schema says {want}")]
    BlockLength {
        /// The message or group.
        what: String,
        /// The length on the wire.
        got: u16,
        /// The schema's length (the first of them for messages with a legacy layout).
        want: u16,
    },
    /// A value outside what its field allows (type range, minValue/maxValue, enum values).
    #[error("{field} = {value}: {why}")]
    BadValue {
        /// The field (`message.field` or `group[i].field`).
        field: String,
        /// The value.
        value: i128,
        /// The rule it breaks.
        why: String,
    },
    /// A var-data length above the schema's maximum.
    #[error("{field}: length {len} is more than the schema's {max}")]
    DataTooLong {
        /// The var-data member.
        field: String,
        /// Its length.
        len: u64,
        /// The schema's maximum.
        max: u32,
    },
    /// A v1.1 layout where v1.2 is required: the two are told apart by block length only and
    /// do not interoperate (spec digest §8).
    #[error(
        "{message} is the v1.1 layout (blockLength {block_length}); v1.2 is required: upgrade the sender"
    )]
    Legacy {
        /// The message.
        message: String,
        /// Its block length on the wire.
        block_length: u16,
    },
    /// Bytes left after a message where exactly one was expected.
    #[error("{0} bytes follow the message")]
    Trailing(usize),
    /// Values that do not match the message's shape (wrong field name, count or kind).
    #[error("{0}")]
    Shape(String),
    /// A schema file this crate carries could not be read (a build defect).
    #[error("schema {schema}: {why}")]
    Schema {
        /// The schema's short name.
        schema: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The value of one fixed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An optional field holding its null sentinel.
    Null,
    /// A scalar (integers of every width, enums by their wire value).
    Int(i128),
    /// A fixed-length array (`dims`, `strides`, pads).
    Array(Vec<i128>),
}

impl Value {
    /// The scalar, if this is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// The values of a message body or of one group entry, parallel to its [`BlockDef`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// One value per fixed field (constants included, holding their constant).
    pub fields: Vec<Value>,
    /// The entries of each group.
    pub groups: Vec<Vec<Entry>>,
    /// The bytes of each var-data member.
    pub data: Vec<Vec<u8>>,
}

impl Entry {
    /// An entry of zeros (nulls for optional fields, empty groups and var data).
    pub fn zeroed(def: &BlockDef) -> Entry {
        Entry {
            fields: def
                .fields
                .iter()
                .map(|f| match f.presence {
                    schema::Presence::Constant(v) => Value::Int(v),
                    schema::Presence::Optional { .. } => Value::Null,
                    schema::Presence::Required if f.count == 1 => {
                        Value::Int(f.enumeration.as_ref().map_or(0, |e| e.values[0].1))
                    }
                    schema::Presence::Required => Value::Array(vec![0; f.count]),
                })
                .collect(),
            groups: vec![Vec::new(); def.groups.len()],
            data: vec![Vec::new(); def.data.len()],
        }
    }
}

/// A decoded message, or one to encode: its layout and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message's layout.
    pub def: &'static MessageDef,
    /// The version in (or for) the header.
    pub version: u16,
    /// The values.
    pub body: Entry,
}

impl Message {
    /// A message of zeros, nulls and empty groups, to be filled with [`Message::set`].
    ///
    /// Returns `None` for a schema or message name that does not exist.
    pub fn new(schema_name: &str, message: &str) -> Option<Message> {
        let def = schema::message(schema_name, message)?;
        let version = schema::schemas().iter().find(|s| s.id == def.schema_id)?.version;
        Some(Message {
            def,
            version,
            body: Entry::zeroed(&def.block),
        })
    }

    /// The value of a fixed field of the body.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.def.block.field_index(field).map(|i| &self.body.fields[i])
    }

    /// The scalar value of a fixed field (`None` for a null, an array or a wrong name).
    pub fn int(&self, field: &str) -> Option<i128> {
        self.get(field).and_then(Value::as_int)
    }

    /// Sets a fixed field of the body; the encoder checks the value against the field.
    pub fn set(&mut self, field: &str, value: impl Into<i128>) -> Result<&mut Message, CodecError> {
        let i = self
            .def
            .block
            .field_index(field)
            .ok_or_else(|| CodecError::Shape(format!("{} has no field {field}", self.def.name)))?;
        self.body.fields[i] = Value::Int(value.into());
        Ok(self)
    }

    /// Sets an optional field of the body to its null.
    pub fn set_null(&mut self, field: &str) -> Result<&mut Message, CodecError> {
        let i = self
            .def
            .block
            .field_index(field)
            .ok_or_else(|| CodecError::Shape(format!("{} has no field {field}", self.def.name)))?;
        self.body.fields[i] = Value::Null;
        Ok(self)
    }

    /// The bytes of a var-data member of the body.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        self.def
            .block
            .data_index(name)
            .map(|i| self.body.data[i].as_slice())
    }

    /// Sets a var-data member of the body.
    pub fn set_data(&mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Result<&mut Message, CodecError> {
        let i = self
            .def
            .block
            .data_index(name)
            .ok_or_else(|| CodecError::Shape(format!("{} has no var data {name}", self.def.name)))?;
        self.body.data[i] = bytes.into();
        Ok(self)
    }

    /// The entries of a group of the body.
    pub fn group(&self, name: &str) -> Option<&[Entry]> {
        self.def
            .block
            .group_index(name)
            .map(|i| self.body.groups[i].as_slice())
    }

    /// Appends an entry of zeros to a group of the body and returns it to fill.
    pub fn push_entry(&mut self, group: &str) -> Result<&mut Entry, CodecError> {
        let i = self
            .def
            .block
            .group_index(group)
            .ok_or_else(|| CodecError::Shape(format!("{} has no group {group}", self.def.name)))?;
        let entry = Entry::zeroed(&self.def.block.groups[i].block);
        self.body.groups[i].push(entry);
        Ok(self.body.groups[i].last_mut().expect("just pushed"))
    }

    /// Encodes the message with its header.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        encode(self)
    }
}
