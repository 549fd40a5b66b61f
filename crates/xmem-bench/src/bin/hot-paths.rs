//! The hot paths, one at a time, for counting their instructions under callgrind
//! (`scripts/hot-paths`): `hot-paths PATH ITERATIONS` sets PATH up, then runs it ITERATIONS
//! times inside [`measured`], the one function callgrind collects in. Instruction counts do not
//! depend on the machine's load, so a rise shows a slower hot path even on a noisy machine.
//!
//! PATH: `pool-acquire-release`, `pool-get-drop`, `stream-publish-receive`,
//! `segment-write-read`, `tensorpool-commit-validate`, or `list`.

use std::hint::black_box;
use std::path::PathBuf;

use xmem_core::segment::{SegmentReader, SegmentWriter};
use xmem_core::stream::{Publisher, Subscriber};
use xmem_core::BufferPool;
use xmem_tensorpool::commit::{Consumer, FrameSpec, Producer};
use xmem_tensorpool::layout::{Dtype, Superblock, TensorHeader};
use xmem_tensorpool::region::Region;

const PATHS: [&str; 5] = [
    "pool-acquire-release",
    "pool-get-drop",
    "stream-publish-receive",
    "segment-write-read",
    "tensorpool-commit-validate",
];

/// Runs `step` `n` times. Never inlined: callgrind's `--toggle-collect` counts what runs
/// inside it, setup and teardown left out.
#[inline(never)]
fn measured(n: u64, mut step: impl FnMut()) {
    for _ in 0..n {
        step();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().map(String::as_str).unwrap_or("list");
    if path == "list" {
        PATHS.iter().for_each(|p| println!("{p}"));
        return;
    }
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let name = format!("hot-paths-{}", std::process::id());
    match path {
        "pool-acquire-release" => {
            let pool = BufferPool::builder(&name)
                .buffers(8)
                .buffer_size(4096)
                .create()
                .unwrap();
            measured(n, || drop(black_box(pool.try_acquire().unwrap())));
        }
        "pool-get-drop" => {
            let pool = BufferPool::builder(&name)
                .buffers(8)
                .buffer_size(4096)
                .create()
                .unwrap();
            let held = pool.try_acquire().unwrap().freeze();
            let token = held.token();
            measured(n, || drop(black_box(pool.get(black_box(token)).unwrap())));
        }
        "stream-publish-receive" => {
            let mut publisher = Publisher::builder(&name)
                .buffers(8)
                .buffer_size(4096)
                .depth(4)
                .max_subscribers(1)
                .create()
                .unwrap();
            let mut subscriber = Subscriber::open(&name).unwrap();
            measured(n, || {
                let mut frame = publisher.loan().unwrap();
                frame.bytes_mut()[0] = 1;
                publisher.publish(frame).unwrap();
                drop(black_box(subscriber.try_receive().unwrap().unwrap()));
            });
        }
        "segment-write-read" => {
            let mut writer = SegmentWriter::builder(&name).size(4096).create().unwrap();
            let mut reader = SegmentReader::open(&name).unwrap();
            let value = [7u8; 256];
            let mut out = [0u8; 256];
            measured(n, || {
                writer.write(&value).unwrap();
                black_box(reader.read_into(&mut out).unwrap());
            });
        }
        "tensorpool-commit-validate" => {
            let dir = PathBuf::from("/dev/shm").join(&name);
            let ring_sb = Superblock::header_ring(7, 1, 8, 1, 0);
            let pool_sb = Superblock::payload_pool(7, 1, 1, 8, 4096, 1, 0);
            let ring = Region::create(&dir.join("header.ring"), &ring_sb, 0o600).unwrap();
            let pool = Region::create(&dir.join("1.pool"), &pool_sb, 0o600).unwrap();
            let mut consumer = Consumer::new(
                Region::open(&dir.join("header.ring"), &ring_sb).unwrap(),
                vec![Region::open(&dir.join("1.pool"), &pool_sb).unwrap()],
            );
            let mut producer = Producer::new(ring, vec![pool]);
            let spec = FrameSpec {
                tensor: TensorHeader::row_major(Dtype::Uint8, &[16, 16]),
                values_len: 256,
                timestamp_ns: 1,
                meta_version: 0,
            };
            let mut out = Vec::with_capacity(4096);
            measured(n, || {
                let seq = producer.publish(&spec, |b| b[0] = 1).unwrap().unwrap();
                let accepted = consumer.read(seq, &mut out).unwrap();
                black_box(accepted.tensor.extent);
            });
            drop((producer, consumer));
            std::fs::remove_dir_all(&dir).unwrap();
        }
        other => {
            eprintln!("hot-paths: no path {other:?}; one of: {}", PATHS.join(", "));
            std::process::exit(2);
        }
    }
}
