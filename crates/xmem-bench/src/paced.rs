//! A Rust publisher and a Rust subscriber paced like the Python benchmark's notification runs
//! (`crates/xmem-python/bench/frames.py`): the publisher busy-waits until each frame is due,
//! loans, writes the first byte and publishes; the subscriber polls. Run beside the Python
//! transports in the same round, it separates what Python adds to a notification from what the
//! host does to every process in that round (this host has stretches of seconds in which every
//! cold cache miss costs several times more).

use std::io::Write as _;
use std::time::{Duration, Instant};

use xmem_core::os::time::monotonic_ns;
use xmem_core::stream::{Policy, Publisher, Subscriber};

/// How long either side waits for the other to appear.
const MEET_WITHIN: Duration = Duration::from_secs(10);
/// Polling before sleeping, as the Python benchmark's polling rows.
const SPIN: Duration = Duration::from_millis(20);

/// Peer role `paced-pub NAME FRAMES PERIOD_NS SIZE WRITE`: creates stream NAME (3 buffers of
/// SIZE bytes, depth 1, `Block`), waits for one subscriber, publishes FRAMES frames, one every
/// PERIOD_NS, each with its first byte written (WRITE `header`) or every byte (`full`), then
/// closes the stream.
pub(crate) fn publisher_role(args: &[&str]) -> i32 {
    let [name, frames, period, size, write] = args else {
        return 2;
    };
    let full = *write == "full";
    let (frames, period, size): (u64, u64, u64) = (
        frames.parse().unwrap(),
        period.parse().unwrap(),
        size.parse().unwrap(),
    );
    let mut publisher = Publisher::builder(name)
        .buffer_size(size)
        .buffers(3)
        .depth(1)
        .policy(Policy::Block {
            timeout: Duration::from_secs(60),
        })
        .spin(SPIN)
        .create()
        .expect("create the stream");
    let met = Instant::now();
    while publisher.subscriber_count() < 1 {
        if met.elapsed() > MEET_WITHIN {
            eprintln!("paced-pub: no subscriber came within {MEET_WITHIN:?}");
            return 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    for i in 0..frames {
        let due = start + Duration::from_nanos(i * period);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let mut frame = publisher.loan().expect("loan");
        if full {
            frame.bytes_mut().fill(i as u8);
        } else {
            frame.bytes_mut()[0] = i as u8;
        }
        publisher.publish(frame).expect("publish"); // stamps the time just before delivering
    }
    0
}

/// Peer role `paced-sub NAME FRAMES`: joins stream NAME once it exists, receives FRAMES frames
/// (polling), and prints each one's latency (now − the publisher's time stamp, ns) on one line.
pub(crate) fn subscriber_role(args: &[&str]) -> i32 {
    let [name, frames] = args else {
        return 2;
    };
    let frames: usize = frames.parse().unwrap();
    let met = Instant::now();
    let mut subscriber = loop {
        match Subscriber::builder(name).spin(SPIN).open() {
            Ok(s) => break s,
            Err(e) if met.elapsed() > MEET_WITHIN => {
                eprintln!("paced-sub: could not join {name}: {e}");
                return 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let mut latencies = Vec::with_capacity(frames);
    while latencies.len() < frames {
        match subscriber.receive_timeout(MEET_WITHIN) {
            Ok(Some(frame)) => latencies.push(monotonic_ns().saturating_sub(frame.timestamp_ns())),
            Ok(None) => {
                eprintln!("paced-sub: no frame within {MEET_WITHIN:?}");
                return 1;
            }
            Err(e) => {
                eprintln!("paced-sub: {e}");
                return 1;
            }
        }
    }
    let line: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!("{}", line.join(" "));
    std::io::stdout().flush().unwrap();
    0
}
