//! Feeds arbitrary bytes, cut into messages, to a live driver's request handling (over an
//! embedded media driver in a directory of its own): nothing may panic, and leases stay few.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use xmem_tp_driver::{Driver, DriverConfig};

struct Live {
    _media: xmem_aeron::MediaDriver,
    driver: Driver,
}

thread_local! {
    static LIVE: RefCell<Live> = RefCell::new({
        let dir = std::path::PathBuf::from(format!("/dev/shm/xmem-tpd-fuzz-{}", std::process::id()));
        let base = format!("/dev/shm/xmem-tpd-fuzz-base-{}", std::process::id());
        std::fs::create_dir_all(&base).unwrap();
        let media = xmem_aeron::MediaDriver::launch(&xmem_aeron::DriverOptions {
            dir: Some(dir.clone()),
            ..Default::default()
        })
        .unwrap();
        let client = xmem_aeron::Client::connect(&xmem_aeron::ClientOptions {
            dir: Some(dir),
            ..Default::default()
        })
        .unwrap();
        let config = format!(
            "[shm]\nbase_dir = \"{base}\"\n[profiles.p]\nheader_nslots = 8\npayload_pools = [{{ pool_id = 1, stride_bytes = 4096 }}]\n\
             [streams.s]\nstream_id = 10000\nprofile = \"p\"\n[policies]\nepoch_gc_min_age_ns = 0\n"
        );
        let config = DriverConfig::parse(&config, "fuzz", |_| None).unwrap();
        Live { _media: media, driver: Driver::new(&client, config).unwrap() }
    });
}

fuzz_target!(|data: &[u8]| {
    LIVE.with(|live| {
        let mut live = live.borrow_mut();
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let n = (len as usize).min(tail.len());
            live.driver.on_message(&tail[..n]);
            rest = &tail[n..];
        }
        let _ = live.driver.do_work();
        assert!(live.driver.leases().count() < 100_000);
    });
});
