//! A test peer for device pools: creates or opens one on the host stand-in (or on CUDA with
//! `--cuda`), then obeys one command per stdin line and answers one line on stdout, so a test
//! can drive several processes through a scenario and kill them at chosen points.
//!
//! ```text
//! device-peer create DIR NAME COUNT SIZE [MODE] [--cuda]  → ready pid=P from=none …
//! device-peer open DIR NAME                                → ready pid=P from=Q …
//! device-peer ask BROKER PID                               → granted | refused: … | error: …
//! device-peer publish DIR STREAM COUNT SIZE               → ready …; then `go N`: N frames,
//!                                                            frame k filled with k as u8
//! device-peer subscribe DIR STREAM N                       → ready …; then `received N` once
//!                                                            N frames were checked
//! commands: fill SEED N | hold TOKEN SEED | check TOKEN SEED | free | drop | quit
//! ```

use std::io::{BufRead, Write};
use std::time::Duration;

use xmem_core::{Buffer, BufferPool, BufferRef};
use xmem_device::{DevicePool, HostStandIn};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let pool = match arg(0).as_str() {
        "ask" => {
            let pid: u32 = arg(2).parse().unwrap_or_else(|_| usage());
            match xmem_core::os::fdpass::request_fd(&arg(1), pid, Duration::from_secs(2)) {
                Ok(_) => println!("granted"),
                Err(e @ xmem_core::os::fdpass::FdPassError::Refused { .. }) => println!("refused: {e}"),
                Err(e) => println!("error: {e}"),
            }
            return;
        }
        "create" => {
            let builder = BufferPool::builder(&arg(2))
                .directory(arg(1))
                .buffers(arg(3).parse().unwrap_or_else(|_| usage()))
                .buffer_size(arg(4).parse().unwrap_or_else(|_| usage()))
                .mode(
                    args.get(5)
                        .and_then(|m| u32::from_str_radix(m, 8).ok())
                        .unwrap_or(0o600),
                );
            if args.iter().any(|a| a == "--cuda") {
                create_cuda(builder)
            } else {
                DevicePool::create(builder, HostStandIn::new(&arg(2)))
            }
        }
        "open" => DevicePool::open_auto(BufferPool::builder(&arg(2)).directory(arg(1))),
        "publish" => return publish(&arg(1), &arg(2), &arg(3), &arg(4)),
        "subscribe" => return subscribe(&arg(1), &arg(2), &arg(3)),
        _ => usage(),
    };
    let pool = match pool {
        Ok(pool) => pool,
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    };
    let from = pool.received_from().map_or("none".to_string(), |p| p.to_string());
    say(&format!(
        "ready pid={} from={from} broker={} device={}",
        std::process::id(),
        pool.broker(),
        pool.describe_device()
    ));
    let mut held: Vec<Buffer> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["fill", seed, n] => fill(
                &pool,
                seed.parse().unwrap_or(0),
                n.parse().unwrap_or(0),
                &mut held,
            ),
            ["hold", token, seed] => check(&pool, token, seed.parse().unwrap_or(0)).map(|b| {
                held.push(b);
                "ok".to_string()
            }),
            ["check", token, seed] => {
                check(&pool, token, seed.parse().unwrap_or(0)).map(|_| "ok".to_string())
            }
            ["free"] => Ok(format!("free {}", pool.pool().free_count())),
            ["drop"] => {
                held.clear();
                Ok("ok".into())
            }
            ["quit"] => break,
            _ => Ok(format!("unknown command {line:?}")),
        };
        say(&answer.unwrap_or_else(|e| format!("error: {e}")));
    }
}

#[cfg(feature = "cuda")]
fn create_cuda(builder: xmem_core::PoolBuilder) -> xmem_device::Result<DevicePool> {
    DevicePool::create(builder, xmem_device::CudaDevice::new(0)?)
}

#[cfg(not(feature = "cuda"))]
fn create_cuda(_: xmem_core::PoolBuilder) -> xmem_device::Result<DevicePool> {
    println!("error: built without the cuda feature");
    std::process::exit(2);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn usage() -> ! {
    eprintln!(
        "usage: device-peer create DIR NAME COUNT SIZE [MODE] [--cuda] | open DIR NAME | ask BROKER PID"
    );
    std::process::exit(2);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_of(text: &str) -> Result<BufferRef, String> {
    let bytes: Result<Vec<u8>, _> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
        .collect();
    BufferRef::from_bytes(&bytes.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

/// Acquires `n` buffers, fills buffer `j` with `seed + j` on the device, synchronises, and
/// keeps them held read-only; answers their tokens.
fn fill(pool: &DevicePool, seed: u8, n: usize, held: &mut Vec<Buffer>) -> Result<String, String> {
    let mut tokens = Vec::new();
    let mut fresh = Vec::new();
    for j in 0..n {
        let frame = pool.pool().try_acquire().map_err(|e| e.to_string())?;
        pool.fill(&frame, seed.wrapping_add(j as u8))
            .map_err(|e| e.to_string())?;
        fresh.push(frame);
    }
    pool.synchronize().map_err(|e| e.to_string())?;
    for frame in fresh {
        let frame = frame.freeze();
        tokens.push(hex(&frame.token().to_bytes()));
        held.push(frame);
    }
    Ok(format!("tokens {}", tokens.join(",")))
}

/// Takes a reference to the buffer and checks that every byte is `seed`.
fn check(pool: &DevicePool, token: &str, seed: u8) -> Result<Buffer, String> {
    let frame = pool.pool().get(token_of(token)?).map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; frame.len()];
    pool.read(&frame, 0, &mut bytes).map_err(|e| e.to_string())?;
    match bytes.iter().position(|&b| b != seed) {
        None => Ok(frame),
        Some(at) => Err(format!("byte {at} is {} not {seed}", bytes[at])),
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    println!("error: {e}");
    std::process::exit(1);
}

fn publish(dir: &str, stream: &str, count: &str, size: &str) {
    let builder = xmem_core::stream::Publisher::builder(stream)
        .directory(dir)
        .buffers(count.parse().unwrap_or_else(|_| usage()))
        .buffer_size(size.parse().unwrap_or_else(|_| usage()))
        // Every frame reaches every subscriber: the test checks them all.
        .policy(xmem_core::stream::Policy::Block {
            timeout: Duration::from_secs(10),
        });
    let mut publisher =
        xmem_device::DevicePublisher::create(builder, HostStandIn::new(stream)).unwrap_or_else(|e| fail(e));
    say(&format!("ready pid={} from=none", std::process::id()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["go", n] => {
                for k in 0..n.parse::<u64>().unwrap_or(0) {
                    let mut frame = publisher.loan().unwrap_or_else(|e| fail(e));
                    frame.set_sequence(k);
                    publisher
                        .device()
                        .fill(&frame, k as u8)
                        .unwrap_or_else(|e| fail(e));
                    publisher.publish(frame).unwrap_or_else(|e| fail(e));
                }
                say("published");
            }
            _ => break,
        }
    }
}

fn subscribe(dir: &str, stream: &str, n: &str) {
    let n: u64 = n.parse().unwrap_or_else(|_| usage());
    let builder = xmem_core::stream::Subscriber::builder(stream).directory(dir);
    let mut subscriber = xmem_device::DeviceSubscriber::open(builder).unwrap_or_else(|e| fail(e));
    let from = subscriber.device().received_from().unwrap_or(0);
    say(&format!("ready pid={} from={from}", std::process::id()));
    let mut bytes = Vec::new();
    for _ in 0..n {
        let frame = match subscriber.receive_timeout(Duration::from_secs(10)) {
            Ok(Some(frame)) => frame,
            Ok(None) => fail("no frame within 10 s"),
            Err(e) => fail(e),
        };
        bytes.resize(frame.len(), 0);
        subscriber
            .device()
            .read(&frame, 0, &mut bytes)
            .unwrap_or_else(|e| fail(e));
        let k = frame.sequence() as u8;
        if let Some(at) = bytes.iter().position(|&b| b != k) {
            fail(format!(
                "frame {}: byte {at} is {} not {k}",
                frame.sequence(),
                bytes[at]
            ));
        }
    }
    say(&format!("received {n}"));
}
