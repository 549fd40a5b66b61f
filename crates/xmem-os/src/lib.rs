//! # xmem-os
//!
//! The operating-system layer of xmem: the only crate of it that makes system calls.
//!
//! Everything above this module works on mapped memory and atomics; everything here is a thin,
//! typed wrapper over `rustix` that the hot paths never call (except `futex` wake/wait, and only
//! when a thread actually has to park).

mod error;
pub mod events;
pub mod fdpass;
pub mod futex;
pub mod map;
pub mod notify;
pub mod placement;
pub mod process;
pub mod random;
pub mod shm;
pub mod time;

pub use error::{OsError, Result};
pub use map::Mapping;
pub use process::{Liveness, ProcessIdentity};
pub use shm::{ShmDir, ShmFile};
