//! Segments of one `bytemuck::Pod` type: [`Segment<T>`], [`TypedWriter`], [`TypedReader`].

use super::*;

/// A segment holding one plain-old-data value of type `T`.
///
/// ```
/// use xmem_core::segment::Segment;
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Pose { x: f64, y: f64, theta: f64 }
/// # fn main() -> xmem_core::Result<()> {
/// # // A directory of the example's own, removed when it ends (declared first: dropped last).
/// # struct Dir(String);
/// # impl Drop for Dir { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
/// # let _dir = Dir(format!("/dev/shm/xmem-doctest-{}", std::process::id()));
/// # std::fs::create_dir_all(&_dir.0).unwrap();
/// # std::env::set_var("XMEM_SHM_DIR", &_dir.0);
/// let mut w = Segment::<Pose>::create("robot.pose")?;
/// w.write(&Pose { x: 1.0, y: 2.0, theta: 0.5 })?;
/// let mut r = Segment::<Pose>::open("robot.pose")?;   // TypeMismatch for another type
/// let pose: Pose = r.read()?;
/// # Ok(()) }
/// ```
pub struct Segment<T>(PhantomData<T>);

impl<T: bytemuck::Pod> Segment<T> {
    /// Configures a segment sized for `T` and marked as holding `T`.
    pub fn builder(name: &str) -> SegmentBuilder {
        let t = TypeInfo::of::<T>();
        let mut b = SegmentBuilder::new(name).size(t.size.max(1).div_ceil(PAGE) * PAGE);
        b.type_info = Some(t);
        b
    }

    /// Creates the segment and becomes its writer.
    pub fn create(name: &str) -> Result<TypedWriter<T>> {
        Self::builder(name).create().map(|inner| TypedWriter {
            inner,
            _t: PhantomData,
        })
    }

    /// Opens the segment; [`Error::TypeMismatch`] if it holds another type.
    pub fn open(name: &str) -> Result<TypedReader<T>> {
        let mut b = SegmentReader::builder(name);
        b.expect_type = Some(TypeInfo::of::<T>());
        Self::open_with(b)
    }

    /// Opens the segment with reader settings.
    pub fn open_with(mut builder: ReaderBuilder) -> Result<TypedReader<T>> {
        builder.expect_type = Some(TypeInfo::of::<T>());
        builder.open().map(|inner| TypedReader {
            inner,
            _t: PhantomData,
        })
    }
}

/// The writer of a [`Segment<T>`].
pub struct TypedWriter<T> {
    pub(super) inner: SegmentWriter,
    pub(super) _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> TypedWriter<T> {
    /// Publishes `value`.
    pub fn write(&mut self, value: &T) -> Result<()> {
        self.inner.write(bytemuck::bytes_of(value))
    }

    /// Publishes `f` applied to the current value (read back from the segment).
    pub fn update(&mut self, f: impl FnOnce(&mut T)) -> Result<()> {
        let mut value: T = bytemuck::Zeroable::zeroed();
        self.inner.write_with(|view| -> Result<()> {
            view.read(0, bytemuck::bytes_of_mut(&mut value))?;
            f(&mut value);
            view.write(0, bytemuck::bytes_of(&value))
        })
    }

    /// The untyped writer.
    pub fn inner(&self) -> &SegmentWriter {
        &self.inner
    }
}

/// A reader of a [`Segment<T>`].
pub struct TypedReader<T> {
    pub(super) inner: SegmentReader,
    pub(super) _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> TypedReader<T> {
    /// The value (always one complete write).
    pub fn read(&mut self) -> Result<T> {
        let mut value: T = bytemuck::Zeroable::zeroed();
        self.inner.read_into(bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// The untyped reader (version, liveness, ...).
    pub fn inner(&mut self) -> &mut SegmentReader {
        &mut self.inner
    }
}
