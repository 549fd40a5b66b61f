//! Device pools across real processes, on the host stand-in (a memfd handed over exactly as a
//! CUDA allocation's descriptor is): the descriptor reaches every attacher from a live holder,
//! the memory outlives a SIGKILLed creator, buffers of the dead are reclaimed, and nothing is
//! left when the last holder goes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use xmem_core::BufferPool;
use xmem_device::{broker_name, DeviceError, DevicePool, HostStandIn};

/// The peer: built beside this test, or `XMEM_DEVICE_PEER` (a machine the binaries were
/// carried to, scripts/device-cuda).
fn peer() -> String {
    std::env::var("XMEM_DEVICE_PEER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_device-peer").to_string())
}

/// A directory of its own under /dev/shm, checked empty and removed at the end.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(tag: &str) -> ShmDir {
        let path = PathBuf::from(format!("/dev/shm/xmem-device-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        ShmDir(path)
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    from: String,
}

impl Peer {
    fn start(args: &[&str]) -> Peer {
        Self::start_with(Command::new(peer()).args(args))
    }

    fn start_with(cmd: &mut Command) -> Peer {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "peer said {line:?}");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .to_string()
        };
        let pid = field("pid=").parse().unwrap();
        let from = field("from=");
        Peer {
            child,
            stdin,
            stdout,
            pid,
            from,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn tokens(&mut self, command: &str) -> Vec<String> {
        let answer = self.ask(command);
        let list = answer
            .strip_prefix("tokens ")
            .unwrap_or_else(|| panic!("{command}: {answer}"));
        list.split(',').map(str::to_string).collect()
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn quit(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// Processes that still hold a memfd or mapping named `xmem-device:<label>`.
fn holders_of(label: &str) -> Vec<String> {
    let needle = format!("memfd:xmem-device:{label}");
    let mut found = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fds = std::fs::read_dir(proc_entry.path().join("fd"));
        let by_fd = fds
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains(&needle)));
        let maps = std::fs::read_to_string(proc_entry.path().join("maps")).unwrap_or_default();
        if by_fd || maps.contains(&needle) {
            found.push(pid);
        }
    }
    found
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

/// A creates and fills four buffers; B attaches and holds two; A is SIGKILLed; B still reads
/// them; C attaches through B, holds one, finds the two only A held free again, writes them,
/// and B reads what C wrote. `device` is `[]` for the host stand-in, `["--cuda"]` for a GPU.
/// Returns when B and C have exited.
fn outlive_scenario(dir: &ShmDir, name: &str, device: &[&str]) {
    let mib = (1 << 20).to_string();
    let mut create = vec!["create", dir.path(), name, "4", &mib, "600"];
    create.extend_from_slice(device);
    let mut a = Peer::start(&create);
    assert_eq!(a.from, "none");
    let t = a.tokens("fill 10 4");

    let mut b = Peer::start(&["open", dir.path(), name]);
    assert_eq!(b.from, a.pid.to_string(), "B's descriptor came from the creator");
    assert_eq!(b.ask(&format!("hold {} 10", t[0])), "ok");
    assert_eq!(b.ask(&format!("hold {} 11", t[1])), "ok");

    a.kill();
    assert_eq!(
        b.ask(&format!("check {} 10", t[0])),
        "ok",
        "the memory died with its creator"
    );
    assert_eq!(b.ask(&format!("check {} 11", t[1])), "ok");

    let mut c = Peer::start(&["open", dir.path(), name]);
    assert_eq!(c.from, b.pid.to_string(), "C's descriptor came from the survivor");
    assert_eq!(c.ask(&format!("hold {} 11", t[1])), "ok");
    // The two buffers only the dead creator held are free again; the two B holds are not.
    assert_eq!(c.ask("free"), "free 2");
    let mine = c.tokens("fill 50 2");
    // What C writes, B reads: one allocation, mapped in both.
    assert_eq!(b.ask(&format!("hold {} 50", mine[0])), "ok");
    assert_eq!(b.ask(&format!("hold {} 51", mine[1])), "ok");
    assert_eq!(c.ask("free"), "free 0");

    b.quit();
    assert_eq!(c.ask(&format!("check {} 51", mine[1])), "ok");
    c.quit();
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the pool's file outlived its holders"
    );
}

#[test]
fn the_memory_outlives_its_killed_creator_and_reaches_a_newcomer_through_a_survivor() {
    let dir = ShmDir::new("outlive");
    let name = unique("outlive");
    outlive_scenario(&dir, &name, &[]);
    assert_eq!(
        holders_of(&name),
        Vec::<String>::new(),
        "the allocation outlived its holders"
    );
}

/// The same on a GPU, where the device's free memory must come back to what it was.
#[cfg(feature = "cuda")]
#[test]
fn on_cuda_the_memory_outlives_its_killed_creator_and_is_freed_after_the_last_holder() {
    let device = match xmem_cuda::Device::open(0) {
        Ok(device) => device,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let (free_before, _) = device.memory_info().unwrap();
    let dir = ShmDir::new("cudaoutlive");
    let name = unique("cudaoutlive");
    outlive_scenario(&dir, &name, &["--cuda"]);
    let (free_after, _) = device.memory_info().unwrap();
    let granule = device.granularity().unwrap();
    assert!(
        free_after + granule >= free_before,
        "{} bytes of device memory not returned",
        free_before - free_after
    );
}

#[test]
fn a_holder_that_died_before_anyone_attached_takes_the_memory_with_it_and_says_so() {
    let dir = ShmDir::new("gone");
    let name = unique("gone");
    let a = Peer::start(&["create", dir.path(), &name, "2", "4096"]);
    a.kill();
    let err = DevicePool::open_auto(BufferPool::builder(&name).directory(dir.path())).unwrap_err();
    assert!(matches!(err, DeviceError::MemoryGone { .. }), "{err}");
    assert!(err.to_string().contains("xmem clean"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the failed open left the pool behind"
    );
}

#[test]
fn a_process_the_pools_mode_does_not_admit_is_refused_the_descriptor() {
    use std::os::unix::process::CommandExt;
    if rustix::process::geteuid().as_raw() != 0 {
        println!("skipped: switching to another uid needs root");
        return;
    }
    let dir = ShmDir::new("admit");
    let name = unique("admit");
    let a = Peer::start(&["create", dir.path(), &name, "2", "4096", "600"]);
    let pool = BufferPool::builder(&name).directory(dir.path()).open().unwrap();
    let broker = broker_name(pool.pool_id(), a.pid);
    let ask = |uid: u32| {
        let out = Command::new(peer())
            .args(["ask", &broker, &a.pid.to_string()])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        ask(65534).starts_with("refused"),
        "nobody got the descriptor of a 0600 pool"
    );
    assert_eq!(ask(0), "granted");
    drop(pool);
    a.quit();
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn a_device_pool_refuses_host_access_and_a_host_pool_is_not_a_device_pool() {
    let dir = ShmDir::new("host");
    let name = unique("hostaccess");
    let builder = BufferPool::builder(&name)
        .directory(dir.path())
        .buffers(2)
        .buffer_size(1000);
    let pool = DevicePool::create(builder, HostStandIn::new(&name)).unwrap();
    assert!(
        pool.record().bytes >= 2 * 1024,
        "buffers are 256-aligned: {:?}",
        pool.record()
    );
    let mut frame = pool.pool().try_acquire().unwrap();
    assert!(frame.bytes_mut().is_empty());
    frame
        .set_tensor(&xmem_core::TensorDesc::contiguous(xmem_core::DType::U8, &[1000]).unwrap())
        .unwrap();
    let err = frame.as_mut_slice::<u8>().unwrap_err();
    assert!(matches!(err, xmem_core::Error::DeviceStorage { .. }), "{err}");
    assert_eq!(
        frame.device_offset(),
        Some(u64::from(frame.index()) * pool.pool().stride())
    );
    pool.write(&frame, 990, &[1; 10]).unwrap();
    let err = pool.write(&frame, 991, &[1; 10]).unwrap_err();
    assert!(matches!(err, DeviceError::OutOfRange { .. }), "{err}");
    let frame = frame.freeze();
    let mut tail = [0u8; 10];
    pool.read(&frame, 990, &mut tail).unwrap();
    assert_eq!(tail, [1; 10]);
    assert!(frame.bytes().is_empty());
    drop(frame);
    drop(pool);

    let host = BufferPool::builder(&name)
        .directory(dir.path())
        .buffers(1)
        .buffer_size(64)
        .create()
        .unwrap();
    let err = DevicePool::open_auto(BufferPool::builder(&name).directory(dir.path())).unwrap_err();
    assert!(matches!(err, DeviceError::NotADevicePool { .. }), "{err}");
    drop(host);
    assert_eq!(dir.entries(), Vec::<String>::new());
    assert!(Path::new(dir.path()).exists());
}

#[test]
fn a_stream_over_a_device_pool_delivers_every_frame_with_its_bytes() {
    let dir = ShmDir::new("stream");
    let name = unique("devstream");
    let mut publisher = Peer::start(&["publish", dir.path(), &name, "4", "65536"]);
    let mut subscribers: Vec<Peer> = (0..2)
        .map(|_| Peer::start(&["subscribe", dir.path(), &name, "200"]))
        .collect();
    for s in &subscribers {
        assert_eq!(
            s.from,
            publisher.pid.to_string(),
            "the descriptor came from the publisher"
        );
    }
    writeln!(publisher.stdin, "go 200").unwrap();
    for s in &mut subscribers {
        let mut line = String::new();
        s.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "received 200");
    }
    let mut line = String::new();
    publisher.stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "published");
    for s in subscribers {
        let mut s = s;
        assert!(s.child.wait().unwrap().success());
    }
    publisher.quit();
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the stream or its pool outlived their users"
    );
    assert_eq!(holders_of(&name), Vec::<String>::new());
}

#[test]
fn a_second_attachment_in_this_process_shares_the_descriptor_and_outlives_the_first() {
    let dir = ShmDir::new("twice");
    let name = unique("twice");
    let builder = || BufferPool::builder(&name).directory(dir.path());
    let first = DevicePool::create(builder().buffers(2).buffer_size(4096), HostStandIn::new(&name)).unwrap();
    let second = DevicePool::open_auto(builder()).unwrap();
    assert_eq!(second.received_from(), Some(std::process::id()));
    let frame = first.pool().try_acquire().unwrap();
    first.fill(&frame, 9).unwrap();
    let frozen = frame.freeze();
    let token = frozen.token();
    let held = second.pool().get(token).unwrap();
    drop(frozen);
    drop(first);
    let mut bytes = [0u8; 4096];
    second.read(&held, 0, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&b| b == 9));
    // This process still serves the allocation: another process gets it from here.
    let mut other = Peer::start(&["open", dir.path(), &name]);
    assert_eq!(other.from, std::process::id().to_string());
    let hex: String = token.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(other.ask(&format!("check {hex} 9")), "ok");
    other.quit();
    drop(held);
    drop(second);
    assert_eq!(dir.entries(), Vec::<String>::new());
}

/// The permissions of the mapping that holds `addr` in this process (`rw-s`, `r--s`, …).
fn mapping_perms(addr: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).unwrap(),
            u64::from_str_radix(hi, 16).unwrap(),
        );
        if (lo..hi).contains(&addr) {
            return f.next().unwrap().to_string();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

#[test]
fn a_reader_maps_the_allocation_read_only_and_its_writes_are_refused() {
    let dir = ShmDir::new("readonly");
    let name = unique("readonly");
    let builder = || BufferPool::builder(&name).directory(dir.path());
    let writer = DevicePool::create(builder().buffers(2).buffer_size(4096), HostStandIn::new(&name)).unwrap();
    let frame = writer.pool().acquire().unwrap();
    writer.fill(&frame, 7).unwrap();
    let frame = frame.freeze();
    let reader = DevicePool::open_auto_read_only(builder()).unwrap();
    let theirs = reader.pool().get(frame.token()).unwrap();
    // The reader's pages are the kernel's read-only ones; the writer's stay writable.
    let at = reader.device_ptr(&theirs).unwrap();
    assert_eq!(mapping_perms(at), "r--s");
    assert_eq!(mapping_perms(writer.device_ptr(&frame).unwrap()), "rw-s");
    let mut back = [0u8; 8];
    reader.read(&theirs, 0, &mut back).unwrap();
    assert_eq!(back, [7; 8], "it reads what the writer wrote");
    // Its own writes are refused with a reason, not a fault.
    let mine = reader.pool().acquire().unwrap();
    let err = reader.fill(&mine, 1).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop((mine, theirs, frame, reader, writer));
    assert_eq!(dir.entries(), Vec::<String>::new());
}
