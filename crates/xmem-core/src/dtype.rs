//! Element types.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor.
///
/// The numeric codes are part of the shared layout and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// Unsigned 8-bit integer (also: raw bytes).
    U8 = 1,
    /// Unsigned 16-bit integer.
    U16 = 2,
    /// Unsigned 32-bit integer.
    U32 = 3,
    /// Unsigned 64-bit integer.
    U64 = 4,
    /// Signed 8-bit integer.
    I8 = 5,
    /// Signed 16-bit integer.
    I16 = 6,
    /// Signed 32-bit integer.
    I32 = 7,
    /// Signed 64-bit integer.
    I64 = 8,
    /// IEEE 754 half precision.
    F16 = 9,
    /// bfloat16.
    BF16 = 10,
    /// IEEE 754 single precision.
    F32 = 11,
    /// IEEE 754 double precision.
    F64 = 12,
    /// Boolean, one byte, 0 or 1.
    Bool = 13,
    /// Complex of two f32.
    C64 = 14,
    /// Complex of two f64.
    C128 = 15,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 15] = [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::Bool,
        DType::C64,
        DType::C128,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// Alignment an element needs in memory.
    pub const fn align(self) -> usize {
        match self {
            DType::C64 => 4,
            DType::C128 => 8,
            d => d.size(),
        }
    }

    /// The code stored in shared memory.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The dtype of a stored code.
    pub fn from_code(code: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| u32::from(d.code()) == code)
    }

    /// The name used in text (numpy's spelling).
    pub const fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::Bool => "bool",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown dtype name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?}; use one of uint8..uint64, int8..int64, float16, bfloat16, float32, float64, bool, complex64, complex128")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;

    /// Accepts numpy's names and the short Rust-style ones (`u8`, `f32`, `bf16`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let short = match lower.as_str() {
            "u8" => Some(DType::U8),
            "u16" => Some(DType::U16),
            "u32" => Some(DType::U32),
            "u64" => Some(DType::U64),
            "i8" => Some(DType::I8),
            "i16" => Some(DType::I16),
            "i32" => Some(DType::I32),
            "i64" => Some(DType::I64),
            "f16" | "half" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            "f32" | "float" => Some(DType::F32),
            "f64" | "double" => Some(DType::F64),
            "c64" => Some(DType::C64),
            "c128" => Some(DType::C128),
            _ => None,
        };
        short
            .or_else(|| DType::ALL.into_iter().find(|d| d.name() == lower))
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_parse() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(u32::from(d.code())), Some(d));
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert!(d.size().is_power_of_two());
            assert_eq!(d.size() % d.align(), 0);
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(99), None);
        assert_eq!("f32".parse::<DType>().unwrap(), DType::F32);
        assert!("float128".parse::<DType>().is_err());
    }
}
