//! Stream roles of the test peer (`xmem-test-peer streampub …` / `streamsub …` / `streamwait …`).
//!
//! Every frame carries its sequence number in its first 8 bytes and a pattern derived from it in
//! the rest, so a subscriber can tell a frame that changed under it (a buffer recycled while it
//! was held) from the frame it received.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{Buffer, Error};

use crate::Rng;

/// Writes frame `seq`'s content.
pub fn fill_frame(seq: u64, bytes: &mut [u8]) {
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in bytes[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
}

/// The sequence number a frame's content says, if the content is one whole frame.
pub fn frame_seq(bytes: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    bytes[8..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .then_some(seq)
}

/// Parses `block` (60 s timeout: the tests check that nothing is lost, not how fast it
/// arrives, on machines that may stall a process for seconds), `drop` or `latest`.
pub fn policy(word: &str) -> Policy {
    match word {
        "block" => Policy::Block {
            timeout: Duration::from_secs(60),
        },
        "drop" => Policy::DropOldest,
        "latest" => Policy::Latest,
        other => panic!("unknown policy {other}"),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `streampub NAME POLICY DEPTH BUFFERS SIZE COUNT HISTORY`: creates the stream, prints
/// `ready`, waits for a line on stdin, publishes COUNT frames (0: until killed) as fast as it
/// can, prints `done PUBLISHED`, and closes the stream when stdin closes.
pub fn publisher(args: &[String]) {
    let [name, policy_word, depth, buffers, size, count, history] = args else {
        panic!("streampub NAME POLICY DEPTH BUFFERS SIZE COUNT HISTORY");
    };
    let count: u64 = count.parse().unwrap();
    let created = Publisher::builder(name)
        .policy(policy(policy_word))
        .depth(depth.parse().unwrap())
        .buffers(buffers.parse().unwrap())
        .buffer_size(size.parse().unwrap())
        .history(history.parse().unwrap())
        .create();
    let mut p = match created {
        Ok(p) => p,
        Err(e) => {
            say(&format!("err {e}"));
            std::process::exit(2);
        }
    };
    say("ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let mut published = 0;
    while count == 0 || published < count {
        let mut frame = match p.loan() {
            Ok(f) => f,
            Err(e) => panic!("loan: {e}"),
        };
        fill_frame(published, frame.bytes_mut());
        match p.publish(frame) {
            Ok(seq) => assert_eq!(seq, published),
            Err(e) => panic!("publish: {e}"),
        }
        published += 1;
    }
    say(&format!("done {published}"));
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// What a subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    gaps: u64,
    bad: u64,
    first: Option<u64>,
    last: Option<u64>,
}

impl Seen {
    fn check(&mut self, frame: &Buffer) {
        let Some(seq) = frame_seq(frame.bytes()) else {
            self.bad += 1;
            return;
        };
        if seq != frame.sequence() {
            self.bad += 1;
        }
        match self.last {
            Some(last) if seq <= last => self.bad += 1, // out of order or twice
            Some(last) => self.gaps += seq - last - 1,
            None => {
                // Subscribed before the first frame: frames before this one were dropped.
                self.gaps += seq;
                self.first = Some(seq);
            }
        }
        self.last = Some(seq);
        self.received += 1;
    }

    /// A held frame must still be what was received.
    fn recheck(&mut self, frame: &Buffer) {
        if frame_seq(frame.bytes()) != Some(frame.sequence()) {
            self.bad += 1;
        }
    }
}

/// `streamsub NAME SEED HOLD_US MAX_HELD`: joins, prints `ready`, receives until the publisher
/// is gone, keeping up to MAX_HELD frames for up to HOLD_US each (chosen at random), checking
/// every frame when received and again when let go. Holding MAX_HELD frames it is busy (a slow
/// consumer): it receives nothing more until the oldest is done with. Prints
/// `done RECEIVED DROPPED GAPS BAD FIRST LAST`.
pub fn subscriber(args: &[String]) {
    let [name, seed, hold_us, max_held] = args else {
        panic!("streamsub NAME SEED HOLD_US MAX_HELD");
    };
    let mut rng = Rng::new(seed.parse().unwrap());
    let hold_us: u64 = hold_us.parse().unwrap();
    let max_held: usize = max_held.parse().unwrap();
    let mut s = Subscriber::open(name).expect("subscribe");
    say("ready");
    let mut seen = Seen::default();
    let mut held: Vec<(Buffer, Instant)> = Vec::new();
    loop {
        if max_held > 0 && held.len() >= max_held {
            // Busy with what it holds: the work a slow consumer does, not a synchronisation.
            let due = held.iter().map(|(_, until)| *until).min().unwrap();
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let now = Instant::now();
        held.retain(|(f, until)| {
            if *until > now {
                return true;
            }
            seen.recheck(f);
            false
        });
        match s.receive_timeout(Duration::from_millis(100)) {
            Ok(Some(frame)) => {
                seen.check(&frame);
                if held.len() < max_held && hold_us > 0 {
                    let until = Instant::now() + Duration::from_micros(rng.below(hold_us + 1));
                    held.push((frame, until));
                }
            }
            Ok(None) => {}
            Err(Error::PublisherGone { .. }) => break,
            Err(e) => panic!("receive: {e}"),
        }
    }
    for (f, _) in held.drain(..) {
        seen.recheck(&f);
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    say(&format!(
        "done {} {} {} {} {} {}",
        seen.received,
        s.dropped(),
        seen.gaps,
        seen.bad,
        opt(seen.first),
        opt(seen.last)
    ));
}

/// `streamwait NAME WAKE_AHEAD_US`: joins (with `wake_ahead` unless 0), prints `ready`,
/// receives with blocking calls until the publisher is gone, checking every frame, and prints
/// `done RECEIVED BAD WAKEUPS` (how often the publisher had to wake it).
pub fn waiter(args: &[String]) {
    let [name, wake_ahead_us] = args else {
        panic!("streamwait NAME WAKE_AHEAD_US");
    };
    let lead: u64 = wake_ahead_us.parse().unwrap();
    let mut b = Subscriber::builder(name);
    if lead > 0 {
        b = b.wake_ahead(Duration::from_micros(lead));
    }
    let mut s = b.open().expect("subscribe");
    say("ready");
    let mut seen = Seen::default();
    loop {
        match s.receive() {
            Ok(frame) => seen.check(&frame),
            Err(Error::PublisherGone { .. }) => break,
            Err(e) => panic!("receive: {e}"),
        }
    }
    say(&format!("done {} {} {}", seen.received, seen.bad, s.wakeups()));
}
