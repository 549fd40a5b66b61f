//! Loom model of the commit protocol (§3): a producer rewriting one header slot and its payload
//! lap after lap while a consumer reads, through the very step functions of `commit::steps`.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p xmem-tensorpool --release --lib model`.
//!
//! Without the fence after the in-progress store (`steps::begin`), loom finds an accepted frame
//! 0 whose payload is frame 1's: the re-read of the commit word may still see frame 0's commit.

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::Relaxed;

use crate::commit::steps;

/// One header slot of a ring of one (every frame overwrites the last): the commit word, the
/// rest of the header, and two payload words. Frame `seq` writes `seq + 1` in all three.
struct Slot {
    word: AtomicU64,
    header: AtomicU64,
    payload: [AtomicU64; 2],
}

fn publish(s: &Slot, seq: u64) {
    steps::begin(&s.word, seq);
    for p in &s.payload {
        p.store(seq + 1, Relaxed);
    }
    s.header.store(seq + 1, Relaxed);
    steps::commit(&s.word, seq);
}

fn read(s: &Slot, seq: u64) -> Option<[u64; 3]> {
    let first = steps::committed(&s.word, seq).ok()?;
    let header = s.header.load(Relaxed);
    let payload = [s.payload[0].load(Relaxed), s.payload[1].load(Relaxed)];
    steps::unchanged(&s.word, first).then_some([header, payload[0], payload[1]])
}

#[test]
fn an_accepted_frame_is_exactly_the_frame_its_sequence_names() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        // Word 0 is frame 0 in progress: nothing committed yet.
        let s = Arc::new(Slot {
            word: AtomicU64::new(0),
            header: AtomicU64::new(0),
            payload: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let consumer = {
            let s = s.clone();
            thread::spawn(move || {
                for seq in 0..2 {
                    if let Some(v) = read(&s, seq) {
                        assert_eq!(
                            v,
                            [seq + 1; 3],
                            "frame {seq} was accepted torn or from another lap"
                        );
                    }
                }
            })
        };
        publish(&s, 0);
        publish(&s, 1);
        consumer.join().unwrap();
        assert_eq!(read(&s, 1), Some([2; 3]));
        assert_eq!(read(&s, 0), None, "frame 0 was overwritten");
    });
}
