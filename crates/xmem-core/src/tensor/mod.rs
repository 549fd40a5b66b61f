//! Tensor descriptions: element type, shape, strides, byte offset, and the checks that keep a
//! description inside its buffer.

pub use crate::dtype::{DType, UnknownDType};

use crate::error::{Error, Result};

/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;

/// Where the elements of a tensor lie inside a buffer.
///
/// Strides are counted in *elements* (as DLPack and PyTorch count them) and may be negative.
/// Every constructor validates; [`TensorDesc::validate_for`] checks a buffer length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorDesc {
    dtype: DType,
    ndim: u8,
    shape: [u64; MAX_DIMS],
    strides: [i64; MAX_DIMS],
    byte_offset: u64,
}

impl TensorDesc {
    /// A C-contiguous (row-major) tensor at byte offset 0.
    pub fn contiguous(dtype: DType, shape: &[u64]) -> Result<Self> {
        if shape.len() > MAX_DIMS {
            return Err(too_many_dims(shape.len()));
        }
        let mut strides = [0i64; MAX_DIMS];
        let mut step: i64 = 1;
        for d in (0..shape.len()).rev() {
            strides[d] = step;
            let dim = i64::try_from(shape[d]).map_err(|_| overflow(shape))?;
            step = step.checked_mul(dim.max(1)).ok_or_else(|| overflow(shape))?;
        }
        Self::strided(dtype, shape, &strides[..shape.len()], 0)
    }

    /// A tensor with explicit strides (in elements) starting `byte_offset` bytes into the buffer.
    pub fn strided(dtype: DType, shape: &[u64], strides: &[i64], byte_offset: u64) -> Result<Self> {
        if shape.len() > MAX_DIMS {
            return Err(too_many_dims(shape.len()));
        }
        if strides.len() != shape.len() {
            return Err(Error::InvalidShape(format!(
                "{} strides for {} dimensions",
                strides.len(),
                shape.len()
            )));
        }
        let mut desc = TensorDesc {
            dtype,
            ndim: shape.len() as u8,
            shape: [0; MAX_DIMS],
            strides: [0; MAX_DIMS],
            byte_offset,
        };
        desc.shape[..shape.len()].copy_from_slice(shape);
        desc.strides[..strides.len()].copy_from_slice(strides);
        desc.extent()?;
        Ok(desc)
    }

    /// The raw view of a buffer: `len` bytes of `U8`.
    pub fn bytes(len: u64) -> Self {
        let mut shape = [0; MAX_DIMS];
        let mut strides = [0; MAX_DIMS];
        shape[0] = len;
        strides[0] = 1;
        TensorDesc {
            dtype: DType::U8,
            ndim: 1,
            shape,
            strides,
            byte_offset: 0,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        usize::from(self.ndim)
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[u64] {
        &self.shape[..self.ndim()]
    }

    /// The stride of each dimension, in elements.
    pub fn strides(&self) -> &[i64] {
        &self.strides[..self.ndim()]
    }

    /// The stride of each dimension, in bytes (numpy's convention).
    pub fn byte_strides(&self) -> Vec<i64> {
        self.strides()
            .iter()
            .map(|s| s * self.dtype.size() as i64)
            .collect()
    }

    /// Byte offset of element `[0, 0, ...]` in the buffer.
    pub fn byte_offset(&self) -> u64 {
        self.byte_offset
    }

    /// Number of elements.
    pub fn num_elements(&self) -> u64 {
        // Cannot overflow: checked by extent() in every constructor.
        self.shape().iter().product()
    }

    /// Whether the elements are dense and in row-major order.
    pub fn is_contiguous(&self) -> bool {
        let mut expected: i64 = 1;
        for d in (0..self.ndim()).rev() {
            if self.shape[d] != 1 && self.strides[d] != expected {
                return false;
            }
            expected = expected.saturating_mul(self.shape[d] as i64);
        }
        true
    }

    /// The byte range `[start, end)` the elements occupy, relative to the buffer start, or `None`
    /// for a tensor with no elements. Errors on arithmetic overflow or a negative start.
    pub fn extent(&self) -> Result<Option<(u64, u64)>> {
        let item = self.dtype.size() as i128;
        let mut lo: i128 = 0;
        let mut hi: i128 = 0;
        let mut count: u128 = 1;
        for d in 0..self.ndim() {
            let n = self.shape[d];
            count = count
                .checked_mul(u128::from(n))
                .ok_or_else(|| overflow(self.shape()))?;
            if n == 0 {
                continue;
            }
            let reach = i128::from(self.strides[d]) * i128::from(n - 1);
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        if count > u128::from(u64::MAX) || count.saturating_mul(item as u128) > u128::from(u64::MAX) {
            return Err(overflow(self.shape()));
        }
        if count == 0 {
            return Ok(None);
        }
        let start = i128::from(self.byte_offset) + lo * item;
        let end = i128::from(self.byte_offset) + (hi + 1) * item;
        if start < 0 {
            return Err(Error::InvalidShape(format!(
                "negative strides reach {} bytes before the buffer start",
                -start
            )));
        }
        let end = u64::try_from(end).map_err(|_| overflow(self.shape()))?;
        Ok(Some((start as u64, end)))
    }

    /// Checks that every element lies inside a buffer of `len` bytes.
    pub fn validate_for(&self, len: u64) -> Result<()> {
        match self.extent()? {
            Some((_, end)) if end > len => Err(Error::InvalidShape(format!(
                "{} {} tensor of shape {:?} (strides {:?}, offset {}) needs {end} bytes, the buffer has {len}",
                self.dtype,
                if self.is_contiguous() { "contiguous" } else { "strided" },
                self.shape(),
                self.strides(),
                self.byte_offset
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that a typed slice of `T` can view this tensor, and returns its element count.
    pub(crate) fn check_view<T: Element>(&self, base_addr: usize) -> Result<usize> {
        if !T::accepts(self.dtype) {
            return Err(Error::DTypeMismatch {
                expected: T::DTYPE,
                actual: self.dtype,
            });
        }
        if !self.is_contiguous() {
            return Err(Error::NotContiguous);
        }
        let align = std::mem::align_of::<T>();
        if (base_addr + self.byte_offset as usize) % align != 0 {
            return Err(Error::Misaligned {
                offset: self.byte_offset,
                align,
                dtype: self.dtype,
            });
        }
        usize::try_from(self.num_elements()).map_err(|_| overflow(self.shape()))
    }
}

fn too_many_dims(n: usize) -> Error {
    Error::InvalidShape(format!("{n} dimensions, the most is {MAX_DIMS}"))
}

fn overflow(shape: &[u64]) -> Error {
    Error::InvalidShape(format!("shape {shape:?} overflows 64-bit sizes"))
}

/// A Rust type that can be viewed in place over tensor data.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid `Self` (other processes write
/// these bytes), and `Self` must have the size of `DTYPE`. `bool` is therefore not an `Element`:
/// view boolean tensors as `u8`.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    /// The dtype this type views.
    const DTYPE: DType;

    /// Whether this type may view a tensor of `dtype`.
    fn accepts(dtype: DType) -> bool {
        dtype == Self::DTYPE
    }
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        // SAFETY: a plain integer/float/array of them: any bits are valid; size matches the dtype.
        unsafe impl Element for $t { const DTYPE: DType = DType::$d; }
        const _: () = assert!(std::mem::size_of::<$t>() == DType::$d.size());
    )*};
}

element!(u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    f32 => F32, f64 => F64, [f32; 2] => C64, [f64; 2] => C128);

// SAFETY: any byte is a valid u8; u8 also views booleans (0/1 bytes) and raw bytes.
unsafe impl Element for u8 {
    const DTYPE: DType = DType::U8;
    fn accepts(dtype: DType) -> bool {
        matches!(dtype, DType::U8 | DType::Bool)
    }
}

#[cfg(feature = "half")]
element!(half::f16 => F16, half::bf16 => BF16);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_strides_and_extent() {
        let t = TensorDesc::contiguous(DType::U8, &[1080, 1920, 3]).unwrap();
        assert_eq!(t.strides(), &[5760, 3, 1]);
        assert!(t.is_contiguous());
        assert_eq!(t.extent().unwrap(), Some((0, 1080 * 1920 * 3)));
        t.validate_for(1080 * 1920 * 3).unwrap();
        assert!(t.validate_for(1080 * 1920 * 3 - 1).is_err());
        let f = TensorDesc::contiguous(DType::F32, &[2, 3]).unwrap();
        assert_eq!(f.byte_strides(), vec![12, 4]);
        assert_eq!(f.extent().unwrap(), Some((0, 24)));
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let s = TensorDesc::contiguous(DType::F64, &[]).unwrap();
        assert_eq!(s.num_elements(), 1);
        assert_eq!(s.extent().unwrap(), Some((0, 8)));
        let e = TensorDesc::contiguous(DType::F64, &[4, 0, 2]).unwrap();
        assert_eq!(e.num_elements(), 0);
        assert_eq!(e.extent().unwrap(), None);
        e.validate_for(0).unwrap();
    }

    #[test]
    fn strided_and_negative_strides() {
        // Every other column of a 4x4 f32 matrix.
        let t = TensorDesc::strided(DType::F32, &[4, 2], &[4, 2], 0).unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(t.extent().unwrap(), Some((0, (3 * 4 + 2 + 1) * 4)));
        // A row flipped left-right: starts at the last element.
        let flip = TensorDesc::strided(DType::U16, &[5], &[-1], 8).unwrap();
        assert_eq!(flip.extent().unwrap(), Some((0, 10)));
        assert!(TensorDesc::strided(DType::U16, &[5], &[-1], 6).is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(TensorDesc::contiguous(DType::U8, &[1; 9]).is_err());
        assert!(TensorDesc::contiguous(DType::U64, &[u64::MAX, 2]).is_err());
        assert!(TensorDesc::contiguous(DType::U64, &[1 << 62]).is_err());
        assert!(TensorDesc::strided(DType::U8, &[2, 2], &[1], 0).is_err());
        assert!(TensorDesc::strided(DType::U8, &[2], &[i64::MAX], u64::MAX).is_err());
    }

    #[test]
    fn views_check_dtype_contiguity_and_alignment() {
        let t = TensorDesc::contiguous(DType::F32, &[4]).unwrap();
        assert_eq!(t.check_view::<f32>(0).unwrap(), 4);
        assert!(matches!(t.check_view::<u32>(0), Err(Error::DTypeMismatch { .. })));
        assert!(matches!(t.check_view::<f32>(2), Err(Error::Misaligned { .. })));
        let b = TensorDesc::contiguous(DType::Bool, &[3]).unwrap();
        assert_eq!(b.check_view::<u8>(0).unwrap(), 3);
        let s = TensorDesc::strided(DType::F32, &[2], &[2], 0).unwrap();
        assert!(matches!(s.check_view::<f32>(0), Err(Error::NotContiguous)));
    }

    proptest! {
        #[test]
        fn any_valid_description_stays_in_bounds(
            shape in prop::collection::vec(0u64..50, 0..=MAX_DIMS),
            seed in any::<u64>(),
            offset in 0u64..4096,
            len in 0u64..1_000_000,
        ) {
            let strides: Vec<i64> = shape.iter().enumerate()
                .map(|(i, _)| ((seed >> (i * 7)) as i64 % 200) - 100).collect();
            if let Ok(t) = TensorDesc::strided(DType::I32, &shape, &strides, offset) {
                if t.validate_for(len).is_ok() {
                    if let Some((start, end)) = t.extent().unwrap() {
                        prop_assert!(start <= end && end <= len);
                        // Every element's first byte lies in [start, end).
                        let mut idx = vec![0u64; shape.len()];
                        for _ in 0..t.num_elements().min(500) {
                            let off: i128 = i128::from(offset) + idx.iter().zip(&strides)
                                .map(|(i, s)| i128::from(*i) * i128::from(*s) * 4).sum::<i128>();
                            prop_assert!(off >= start as i128 && off + 4 <= end as i128);
                            for d in (0..shape.len()).rev() {
                                idx[d] += 1;
                                if idx[d] < shape[d] { break; }
                                idx[d] = 0;
                            }
                        }
                    }
                }
            }
        }
    }
}
