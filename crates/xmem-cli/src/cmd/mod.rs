//! One module per subcommand; each is a thin layer over `xmem-core`.

pub(crate) mod bench;
pub(crate) mod clean;
pub(crate) mod demo;
pub(crate) mod demo_device;
pub(crate) mod inspect;
pub(crate) mod ls;
pub(crate) mod produce;
pub(crate) mod stat;
pub(crate) mod tp;
pub(crate) mod tp_bridge;
pub(crate) mod tp_clean;
pub(crate) mod tp_driver;
pub(crate) mod tp_live;
pub(crate) mod watch;
