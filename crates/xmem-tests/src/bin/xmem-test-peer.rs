//! A peer process for xmem's tests.
//!
//! Without arguments it answers one command per stdin line with `ok …` or `err KIND message`:
//!
//! ```text
//! create NAME COUNT SIZE | open NAME | open_fd FD | drop_pool
//! acquire MS (0: try, -1: forever) | acquire_all | fill INDEX BYTE | freeze INDEX
//! get TOKEN | get_mut TOKEN | release INDEX | release_all | into_raw INDEX | release_raw TOKEN
//! send INDEX PID | share INDEX PID | sum INDEX | tensor INDEX | free | reclaim | exit
//! ```
//!
//! `churn NAME SEED TOKEN` opens a pool and changes references at random forever (for kill
//! tests); `nosyscall NAME TOKEN ITERATIONS` runs the hot paths under a seccomp filter that kills
//! the process on any system call.
//!
//! Segments: `segcreate NAME SIZE [locked]` (a REPL command: creates and holds a writer, its
//! pages locked in RAM with `locked`), `segopen NAME`
//! (holds a reader), `segwriter NAME SIZE START_VERSION` (prints `ready`, then writes
//! self-checking values forever), `segreader NAME THREADS MILLIS` (reads and checks from
//! THREADS threads, prints `done READS TORN ERRORS LEAST_READS_OF_A_THREAD`).
//!
//! Streams: `streampub …`, `streamsub …` and `streamwait …`, see `xmem_tests::stream_peer`.
//!
//! Victims of a hostile peer (they never unwrap: every error the library returns is counted,
//! so that only a crash inside it ends them early): `victim-pool NAME create|open SECONDS`,
//! `victim-segwriter NAME SECONDS`, `victim-segreader NAME SECONDS`. Each prints `ready`, works
//! for SECONDS (or until SIGTERM), then prints `done OPS ERRORS LAST_ERROR`.

use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use xmem_core::{Buffer, BufferMut, BufferPool, DType, Error, TensorDesc};
use xmem_tests::{checksum, parse_token, token_hex, Rng};

enum Held {
    R(Buffer),
    W(BufferMut),
}

impl Held {
    fn index(&self) -> u32 {
        match self {
            Held::R(b) => b.index(),
            Held::W(b) => b.index(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Held::R(b) => b.bytes(),
            Held::W(b) => b.bytes(),
        }
    }
}

struct State {
    pool: Option<BufferPool>,
    held: Vec<Held>,
    segment_writer: Option<xmem_core::segment::SegmentWriter>,
    segment_reader: Option<xmem_core::segment::SegmentReader>,
}

fn kind(e: &Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("churn") => churn(&args[1], args[2].parse().unwrap(), &args[3]),
        Some("nosyscall") => nosyscall(&args[1], &args[2], &args[3]),
        Some("segwriter") => segment_writer(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("segreader") => segment_reader(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("streampub") => xmem_tests::stream_peer::publisher(&args[1..]),
        Some("streamsub") => xmem_tests::stream_peer::subscriber(&args[1..]),
        Some("streamwait") => xmem_tests::stream_peer::waiter(&args[1..]),
        Some("victim-pool") => victim_pool(&args[1], &args[2], args[3].parse().unwrap()),
        Some("victim-segwriter") => victim_segment_writer(&args[1], args[2].parse().unwrap()),
        Some("victim-segreader") => victim_segment_reader(&args[1], args[2].parse().unwrap()),
        _ => repl(),
    }
}

fn repl() {
    let mut st = State {
        pool: None,
        held: Vec::new(),
        segment_writer: None,
        segment_reader: None,
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"exit") {
            break;
        }
        let reply = match run(&words, &mut st) {
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {} {e}", kind(&e)),
        };
        writeln!(out, "{reply}").unwrap();
        out.flush().unwrap();
    }
}

fn pool(st: &State) -> Result<&BufferPool, Error> {
    st.pool
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("no pool open".into()))
}

fn take(st: &mut State, index: &str) -> Result<Held, Error> {
    let index: u32 = index.parse().unwrap();
    let at = st
        .held
        .iter()
        .position(|h| h.index() == index)
        .ok_or_else(|| Error::InvalidConfig(format!("not holding buffer {index}")))?;
    Ok(st.held.remove(at))
}

fn run(w: &[&str], st: &mut State) -> Result<String, Error> {
    match w {
        ["create", name, count, size] => {
            let p = BufferPool::builder(name)
                .buffers(count.parse().unwrap())
                .buffer_size(size.parse().unwrap())
                .create()?;
            let slot = p.process_slot();
            st.pool = Some(p);
            Ok(format!("{} {slot}", std::process::id()))
        }
        ["open", name] => {
            let p = BufferPool::open(name)?;
            let slot = p.process_slot();
            st.pool = Some(p);
            Ok(format!("{} {slot}", std::process::id()))
        }
        ["open_fd", fd] => {
            // SAFETY: the test passed this descriptor to us for exactly this purpose.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd.parse().unwrap()) };
            let p = BufferPool::from_fd(fd)?;
            let slot = p.process_slot();
            st.pool = Some(p);
            Ok(format!("{} {slot}", std::process::id()))
        }
        ["drop_pool"] => {
            st.pool = None;
            Ok(String::new())
        }
        ["acquire", ms] => {
            let p = pool(st)?;
            let ms: i64 = ms.parse().unwrap();
            let b = match ms {
                0 => p.try_acquire()?,
                m if m < 0 => p.acquire()?,
                m => p.acquire_timeout(Duration::from_millis(m as u64))?,
            };
            let t = b.token();
            st.held.push(Held::W(b));
            Ok(token_hex(t))
        }
        ["acquire_all"] => {
            let p = pool(st)?.clone();
            let mut n = 0;
            while let Ok(b) = p.try_acquire() {
                st.held.push(Held::W(b));
                n += 1;
            }
            Ok(n.to_string())
        }
        ["fill", index, byte] => {
            let Held::W(mut b) = take(st, index)? else {
                return Err(Error::InvalidConfig("not writable".into()));
            };
            b.bytes_mut().fill(byte.parse().unwrap());
            let n = b.len() as u64;
            b.set_tensor(&TensorDesc::contiguous(DType::U8, &[n])?)?;
            b.set_sequence(u64::from(b.index()) + 1000);
            let b = b.freeze();
            let out = format!("{} {}", token_hex(b.token()), checksum(b.bytes()));
            st.held.push(Held::R(b));
            Ok(out)
        }
        ["freeze", index] => {
            let Held::W(b) = take(st, index)? else {
                return Err(Error::InvalidConfig("not writable".into()));
            };
            let b = b.freeze();
            let t = token_hex(b.token());
            st.held.push(Held::R(b));
            Ok(t)
        }
        ["get", token] => {
            let b = pool(st)?.get(parse_token(token))?;
            let out = format!("{} {}", b.index(), checksum(b.bytes()));
            st.held.push(Held::R(b));
            Ok(out)
        }
        ["get_mut", token] => {
            let b = pool(st)?.get_mut(parse_token(token))?;
            let out = format!("{} {}", b.index(), checksum(b.bytes()));
            st.held.push(Held::W(b));
            Ok(out)
        }
        ["release", index] => {
            take(st, index)?;
            Ok(String::new())
        }
        ["release_all"] => {
            st.held.clear();
            Ok(String::new())
        }
        ["into_raw", index] => {
            let Held::R(b) = take(st, index)? else {
                return Err(Error::InvalidConfig("not frozen".into()));
            };
            Ok(token_hex(b.into_raw()))
        }
        ["release_raw", token] => {
            pool(st)?.release_raw(parse_token(token))?;
            Ok(String::new())
        }
        ["send", index, pid] => {
            let peer = pool(st)?.peer(pid.parse().unwrap())?;
            let t = match take(st, index)? {
                Held::R(b) => b.send(&[peer])?,
                Held::W(b) => b.send(&[peer])?,
            };
            Ok(token_hex(t))
        }
        ["share", index, pid] => {
            let peer = pool(st)?.peer(pid.parse().unwrap())?;
            let index: u32 = index.parse().unwrap();
            match st.held.iter().find(|h| h.index() == index) {
                Some(Held::R(b)) => b.share_with(&[peer])?,
                _ => return Err(Error::InvalidConfig("not holding it shared".into())),
            }
            Ok(String::new())
        }
        ["sum", index] => {
            let index: u32 = index.parse().unwrap();
            let h = st
                .held
                .iter()
                .find(|h| h.index() == index)
                .ok_or_else(|| Error::InvalidConfig("not held".into()))?;
            Ok(checksum(h.bytes()).to_string())
        }
        ["tensor", index] => {
            let index: u32 = index.parse().unwrap();
            let desc = match st.held.iter().find(|h| h.index() == index) {
                Some(Held::R(b)) => b.tensor()?,
                Some(Held::W(b)) => b.tensor()?,
                None => return Err(Error::InvalidConfig("not held".into())),
            };
            Ok(format!("{} {:?}", desc.dtype(), desc.shape()))
        }
        ["segcreate", name, size] => {
            st.segment_writer = Some(xmem_core::segment::SegmentWriter::create(
                name,
                size.parse().unwrap(),
            )?);
            Ok(std::process::id().to_string())
        }
        ["segcreate", name, size, "locked"] => {
            st.segment_writer = Some(
                xmem_core::segment::SegmentWriter::builder(name)
                    .size(size.parse().unwrap())
                    .lock_in_memory(true)
                    .create()?,
            );
            Ok(std::process::id().to_string())
        }
        ["segopen", name] => {
            st.segment_reader = Some(xmem_core::segment::SegmentReader::open(name)?);
            Ok(std::process::id().to_string())
        }
        ["segwrite", text] => {
            let w = st
                .segment_writer
                .as_mut()
                .ok_or_else(|| Error::InvalidConfig("no segment writer".into()))?;
            w.write(text.as_bytes())?;
            Ok(w.version().to_string())
        }
        ["free"] => Ok(pool(st)?.free_count().to_string()),
        ["reclaim"] => {
            let r = pool(st)?.reclaim();
            Ok(format!("{} {}", r.dead_processes.len(), r.references))
        }
        _ => Err(Error::InvalidConfig(format!("unknown command {w:?}"))),
    }
}

/// Changes references at random, forever; the test kills it at a random moment.
fn churn(name: &str, seed: u64, shared: &str) {
    let pool = BufferPool::open(name).expect("open");
    let shared = parse_token(shared);
    let cap = (pool.buffer_count() as usize / 2).max(1);
    let mut rng = Rng::new(seed);
    let mut held: Vec<Held> = Vec::new();
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        // Bounded: many references at times, but always back to acquiring.
        if held.len() >= 3 * cap {
            let at = rng.below(held.len() as u64) as usize;
            held.swap_remove(at);
            continue;
        }
        match rng.below(10) {
            0 | 1 => {
                if let Ok(mut b) = pool.try_acquire() {
                    b.bytes_mut()[0] = rng.next_u64() as u8;
                    if rng.below(2) == 0 {
                        held.push(Held::R(b.freeze()));
                    } else {
                        held.push(Held::W(b));
                    }
                }
            }
            2 => held.push(Held::R(
                pool.get(shared).expect("the test holds the shared buffer"),
            )),
            3 | 4 if !held.is_empty() => {
                let at = rng.below(held.len() as u64) as usize;
                held.swap_remove(at);
            }
            5 if !held.is_empty() => {
                let at = rng.below(held.len() as u64) as usize;
                if let Held::R(b) = &held[at] {
                    let copy = b.clone();
                    held.push(Held::R(copy));
                }
            }
            6 if !held.is_empty() => {
                let at = rng.below(held.len() as u64) as usize;
                if let Held::W(_) = held[at] {
                    let Held::W(b) = held.swap_remove(at) else {
                        unreachable!()
                    };
                    held.push(Held::R(b.freeze()));
                }
            }
            7 if !held.is_empty() => {
                let at = rng.below(held.len() as u64) as usize;
                if let Held::R(_) = held[at] {
                    let Held::R(b) = held.swap_remove(at) else {
                        unreachable!()
                    };
                    match b.try_into_mut() {
                        Ok(m) => held.push(Held::W(m)),
                        Err(b) => held.push(Held::R(b)),
                    }
                }
            }
            8 => {
                // Exhausts the pool at times, so the kill can land while parked.
                if let Ok(b) = pool.acquire_timeout(Duration::from_micros(rng.below(300))) {
                    held.push(Held::W(b));
                }
            }
            9 if !held.is_empty() => {
                let at = rng.below(held.len() as u64) as usize;
                if let Held::R(b) = &held[at] {
                    let t = b.token();
                    held.push(Held::R(pool.get(t).expect("own reference pins it")));
                }
            }
            _ => {}
        }
    }
}

/// Runs the hot paths under a seccomp filter that kills the process on any system call other
/// than `write` and `exit_group`. Prints `ok` and exits 0 if none was made.
/// With `iterations` = `control`, makes one system call after the filter instead (it must die).
fn nosyscall(name: &str, shared: &str, iterations: &str) {
    let pool = BufferPool::open(name).expect("open");
    let shared = parse_token(shared);
    let own = pool.try_acquire().expect("a free buffer").freeze();
    // Warm up: first touches, lazy statics, branch predictors.
    for _ in 0..1000 {
        drop(pool.try_acquire().unwrap());
        drop(pool.get(shared).unwrap());
        drop(own.clone());
    }
    install_seccomp();
    if iterations == "control" {
        // SAFETY: getppid has no preconditions; the filter must kill us here.
        unsafe { libc::getppid() };
    }
    let iterations: u64 = iterations.parse().unwrap_or(0);
    let mut sink = 0u64;
    for _ in 0..iterations {
        let mut b = pool.try_acquire().unwrap();
        b.bytes_mut()[0] = 1;
        let b = b.freeze(); // freeze, then free by drop
        sink += u64::from(b.bytes()[0]);
        drop(b);
        let g = pool.get(shared).unwrap(); // a reference another process holds
        sink += u64::from(g.bytes()[0]);
        drop(g);
        let t = own.token();
        let g = pool.get(t).unwrap(); // a reference this process holds
        drop(g);
        drop(own.clone());
    }
    std::hint::black_box(sink);
    let msg = b"ok\n";
    // SAFETY: writing a static buffer to stdout, then ending the process: the two allowed calls.
    unsafe {
        libc::write(1, msg.as_ptr().cast(), msg.len());
        libc::_exit(0);
    }
}

fn install_seccomp() {
    use libc::*;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut filter = vec![stmt(
        BPF_LD | BPF_W | BPF_ABS,
        std::mem::offset_of!(seccomp_data, nr) as u32,
    )];
    for nr in [SYS_write, SYS_exit_group] {
        filter.push(jeq(nr as u32, 0, 1));
        filter.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    filter.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    let prog = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: standard seccomp installation; `prog` points to a live filter for the call.
    unsafe {
        assert_eq!(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        assert_eq!(
            syscall(
                SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const sock_fprog
            ),
            0,
            "seccomp"
        );
    }
}

/// Writes self-checking values forever (see `xmem_tests::segment_value`).
fn segment_writer(name: &str, size: u64, start_version: u64) {
    let mut w = xmem_core::segment::SegmentWriter::builder(name)
        .size(size)
        .initial_version(start_version)
        .create()
        .expect("create");
    let mut value = vec![0u8; size as usize];
    xmem_tests::segment_value(1, &mut value);
    w.write(&value).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    for seq in 2u64.. {
        xmem_tests::segment_value(seq, &mut value);
        w.write(&value).unwrap();
    }
}

/// Reads and checks from `threads` threads for `millis` ms; prints the totals.
fn segment_reader(name: &str, threads: usize, millis: u64) {
    let end = std::time::Instant::now() + Duration::from_millis(millis);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let name = name.to_string();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || xmem_tests::check_segment_reads(&name, end))
                .unwrap()
        })
        .collect();
    let (mut reads, mut torn, mut errors, mut least) = (0u64, 0u64, 0u64, u64::MAX);
    for w in workers {
        let t = w.join().unwrap();
        reads += t.reads;
        torn += t.torn;
        errors += t.errors;
        least = least.min(t.reads);
    }
    println!("done {reads} {torn} {errors} {least}");
}

/// What a victim did: operations, errors the library returned, and the last of them.
#[derive(Default)]
struct Tally {
    ops: u64,
    errors: u64,
    last: Option<String>,
}

impl Tally {
    fn note<T>(&mut self, r: Result<T, Error>) -> Option<T> {
        self.ops += 1;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors += 1;
                self.last = Some(e.to_string());
                None
            }
        }
    }

    fn done(self) {
        let last = self.last.unwrap_or_else(|| "-".into()).replace('\n', " ");
        println!("done {} {} {last}", self.ops, self.errors);
        std::io::stdout().flush().unwrap();
    }
}

/// Runs `work` until `seconds` pass or SIGTERM comes.
fn victim_loop(seconds: f64, mut work: impl FnMut()) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        work();
    }
}

fn victim_pool(name: &str, how: &str, seconds: f64) {
    let mut t = Tally::default();
    let pool = match how {
        "create" => BufferPool::builder(name).buffers(8).buffer_size(4096).create(),
        _ => BufferPool::open(name),
    };
    let Some(pool) = t.note(pool) else {
        // Not `ready`: the test sees the exit and this line, a setup failure.
        return t.done();
    };
    let mut held: Vec<Buffer> = Vec::new();
    let mut n = 0u64;
    victim_loop(seconds, || {
        n += 1;
        if let Some(mut b) = t.note(pool.acquire_timeout(Duration::from_millis(5))) {
            b.bytes_mut().fill(n as u8);
            let frozen = b.freeze();
            if let Some(again) = t.note(pool.get(frozen.token())) {
                let _ = checksum(again.bytes());
            }
            held.push(frozen);
        }
        if held.len() > 2 {
            held.remove(0);
        }
        if n.is_multiple_of(64) {
            let _ = pool.reclaim();
        }
    });
    drop(held);
    t.done();
}

fn victim_segment_writer(name: &str, seconds: f64) {
    let mut t = Tally::default();
    let Some(mut w) = t.note(
        xmem_core::segment::SegmentWriter::builder(name)
            .size(4096)
            .create(),
    ) else {
        // Not `ready`: the test sees the exit and this line, a setup failure.
        return t.done();
    };
    let mut value = vec![0u8; 4096];
    let mut seq = 0;
    victim_loop(seconds, || {
        seq += 1;
        xmem_tests::segment_value(seq, &mut value);
        t.note(w.write(&value));
    });
    t.done();
}

fn victim_segment_reader(name: &str, seconds: f64) {
    let mut t = Tally::default();
    let Some(mut r) = t.note(xmem_core::segment::SegmentReader::open(name)) else {
        // Not `ready`: the test sees the exit and this line, a setup failure.
        return t.done();
    };
    let mut value = vec![0u8; r.size()];
    victim_loop(seconds, || {
        let _ = t.note(r.read_into(&mut value));
        let _ = r.writer_alive();
    });
    t.done();
}
