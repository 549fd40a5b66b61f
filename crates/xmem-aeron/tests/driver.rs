//! A real media driver: embedded, in a child process, killed; clients of it, and what they say.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xmem_aeron::{
    driver_status, Client, ClientOptions, DriverOptions, DriverStatus, Error, MediaDriver, Offer, TP_CHANNEL,
};

/// A unique Aeron directory under /dev/shm; the test fails if anything is left there at the end.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TestDir(PathBuf::from(format!(
            "/dev/shm/xmem-aeron-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let left = self.0.exists();
        let _ = std::fs::remove_dir_all(&self.0);
        if left && !std::thread::panicking() {
            panic!("the test left {} behind", self.0.display());
        }
    }
}

fn options(dir: &Path) -> DriverOptions {
    DriverOptions {
        dir: Some(dir.to_path_buf()),
        ..DriverOptions::default()
    }
}

fn client(dir: &Path, driver_timeout: Duration) -> Result<Client, Error> {
    Client::connect(&ClientOptions {
        dir: Some(dir.to_path_buf()),
        driver_timeout,
        ..ClientOptions::default()
    })
}

/// Waits for `cond` (polled every millisecond) at most `limit`; how long it took.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

/// A media driver in a child process (this test binary, running the ignored helper below).
fn driver_process(dir: &Path) -> Child {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "driver_process_helper", "--nocapture"])
        .env("XMEM_AERON_TEST_DRIVER_DIR", dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the child's driver to start", || {
        matches!(driver_status(dir), DriverStatus::Active { .. })
    });
    child
}

#[test]
#[ignore = "a helper: other tests run it as a child process that keeps a driver until killed"]
fn driver_process_helper() {
    let Some(dir) = std::env::var_os("XMEM_AERON_TEST_DRIVER_DIR") else {
        return;
    };
    let _driver = MediaDriver::launch(&options(Path::new(&dir))).unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn messages_cross_an_embedded_driver_whole_and_offers_never_wait() {
    let dir = TestDir::new();
    let driver = MediaDriver::launch(&options(&dir.0)).unwrap();
    assert!(driver.is_running() && driver.replaced().is_none());
    assert!(
        matches!(driver_status(&dir.0), DriverStatus::Active { pid } if pid == std::process::id() as i64)
    );
    {
        let aeron = client(&dir.0, Duration::from_secs(5)).unwrap();
        let publication = aeron.publication(TP_CHANNEL, 1000).unwrap();
        assert_eq!(publication.offer(b"nobody listens"), Offer::NotConnected);
        let mut subscription = aeron.subscription(TP_CHANNEL, 1000).unwrap();
        wait_for(Duration::from_secs(10), "the publication to connect", || {
            publication.is_connected()
        });
        // One message below the MTU, one that Aeron must fragment (the IPC MTU is 1408 bytes).
        let small = b"announce".to_vec();
        let large: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        assert!(publication.offer(&small).is_sent());
        assert!(publication.offer(&large).is_sent());
        let mut got: Vec<(Vec<u8>, i32)> = Vec::new();
        wait_for(Duration::from_secs(10), "both messages", || {
            subscription
                .poll(16, |m| got.push((m.bytes.to_vec(), m.session_id)))
                .unwrap();
            got.len() == 2
        });
        assert_eq!(got[0].0, small);
        assert_eq!(got[1].0, large, "reassembled whole");
        assert_eq!(got[0].1, got[1].1, "one session: one publication");
        assert_ne!(got[0].1, 0);
        aeron.check().unwrap();
    }
    drop(driver);
    assert!(!dir.0.exists(), "the driver removes its directory when it stops");
}

#[test]
fn a_live_driver_is_not_replaced_and_no_driver_is_said_at_once() {
    let dir = TestDir::new();
    let started = Instant::now();
    match client(&dir.0, Duration::from_secs(5)) {
        Err(e @ Error::NoDriver { .. }) => assert!(e.to_string().contains("xmem tp media-driver"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not Aeron's driver timeout"
    );
    let driver = MediaDriver::launch(&options(&dir.0)).unwrap();
    match MediaDriver::launch(&options(&dir.0)) {
        Err(Error::DriverRunning { pid, .. }) => assert_eq!(pid, std::process::id() as i64),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two drivers in one directory"),
    }
    drop(driver);
}

#[test]
fn a_killed_drivers_directory_is_replaced_at_once_and_its_clients_say_it_is_lost() {
    let dir = TestDir::new();
    let mut child = driver_process(&dir.0);
    let aeron = client(&dir.0, Duration::from_secs(1)).unwrap();
    let publication = aeron.publication(TP_CHANNEL, 1100).unwrap();
    aeron.check().unwrap();

    child.kill().unwrap();
    child.wait().unwrap();
    let dead_after = wait_for(Duration::from_secs(5), "the directory to read as dead", || {
        matches!(driver_status(&dir.0), DriverStatus::Dead { .. })
    });
    assert!(
        dead_after < Duration::from_secs(3),
        "dead by its pid, not Aeron's 10 s: {dead_after:?}"
    );
    let lost_after = wait_for(Duration::from_secs(10), "the client to notice", || {
        aeron.check().is_err()
    });
    let e = aeron.check().unwrap_err();
    assert!(matches!(e, Error::DriverLost { .. }), "{e}");
    assert!(e.to_string().contains("restart it"), "{e}");
    assert!(
        lost_after < Duration::from_secs(5),
        "within the client's driver timeout: {lost_after:?}"
    );
    assert_ne!(publication.offer(b"x"), Offer::Sent);
    drop(publication);
    drop(aeron);

    match client(&dir.0, Duration::from_secs(5)) {
        Err(e @ Error::NoDriver { .. }) => assert!(e.to_string().contains("is gone"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to a dead driver"),
    }
    let started = Instant::now();
    let driver = MediaDriver::launch(&options(&dir.0)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not Aeron's wait for the old driver's timeout"
    );
    assert!(matches!(driver.replaced(), Some(DriverStatus::Dead { .. })));
    let aeron = client(&dir.0, Duration::from_secs(5)).unwrap();
    let publication = aeron.publication(TP_CHANNEL, 1100).unwrap();
    let mut subscription = aeron.subscription(TP_CHANNEL, 1100).unwrap();
    wait_for(Duration::from_secs(10), "the new publication to connect", || {
        publication.is_connected()
    });
    assert!(publication.offer(b"again").is_sent());
    let mut got = 0;
    wait_for(Duration::from_secs(10), "the message", || {
        subscription.poll(4, |_| got += 1).unwrap();
        got == 1
    });
    drop((publication, subscription, aeron));
    drop(driver);
}
