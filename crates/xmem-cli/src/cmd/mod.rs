//! One module per subcommand; each is a thin layer over `xmem-core`.

pub mod bench;
pub mod clean;
pub mod demo;
pub mod demo_device;
pub mod inspect;
pub mod ls;
pub mod produce;
pub mod tp;
pub mod tp_bridge;
pub mod tp_driver;
pub mod tp_live;
pub mod watch;
