//! `xmem ls`

use anyhow::Result;
use serde_json::json;
use xmem_core::discovery::{self, Detail, Entry};
use xmem_core::object::ObjectState;
use xmem_core::os::{Liveness, ShmDir};

use crate::{fmt, Format};

pub(crate) fn run(format: Format) -> Result<()> {
    let entries = discovery::list()?;
    let tp = tp_streams();
    let drivers = tp_drivers();
    match format {
        Format::Json => {
            let mut items: Vec<_> = entries.iter().map(entry_json).collect();
            items.extend(tp.iter().map(|s| {
                json!({"kind": "tensorpool-stream", "stream_id": s.stream_id, "epoch": s.epoch,
                       "namespace": s.namespace, "path": s.dir, "pid": s.pid, "alive": s.alive,
                       "nslots": s.nslots})
            }));
            items.extend(
                drivers.iter().map(
                    |d| json!({"kind": "tensorpool-driver", "pid": d.0, "aeron_dir": d.1, "leases": d.2}),
                ),
            );
            outln!("{}", serde_json::to_string_pretty(&items)?)?;
        }
        Format::Text if entries.is_empty() => {
            outln!("no xmem objects in {}", ShmDir::default().path().display())?;
            print_tp(&tp, &drivers)?;
        }
        Format::Text => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.kind.map(|k| k.to_string()).unwrap_or_else(|| "?".into()),
                        entry_state_word(e).to_string(),
                        e.owner.map(|o| o.pid.to_string()).unwrap_or_else(|| "?".into()),
                        e.owner_liveness.map(liveness_word).unwrap_or("?").to_string(),
                        fmt::bytes(e.file_size),
                        fmt::age(e.created_unix_ns),
                        usage(e),
                    ]
                })
                .collect();
            fmt::table(
                &["NAME", "KIND", "STATE", "OWNER", "ALIVE", "SIZE", "AGE", "USE"],
                &rows,
            )?;
            print_tp(&tp, &drivers)?;
        }
    }
    Ok(())
}

/// One epoch of a tensor-pool stream found under `/dev/shm/tensorpool-*` (or one level down).
struct TpStream {
    namespace: String,
    stream_id: u32,
    epoch: u64,
    dir: String,
    pid: u64,
    alive: bool,
    nslots: u32,
}

/// Every header ring in the canonical layout (`/dev/shm/tensorpool-<user>/<ns>/<stream>/<epoch>`),
/// read through its superblock (a file that fails its checks is left out).
fn tp_streams() -> Vec<TpStream> {
    let mut out = Vec::new();
    let dirs = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    let is_root = |p: &std::path::PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tensorpool-"))
    };
    // `shm.base_dir` is /dev/shm by default, a directory of its own in some deployments
    // (tensor_pool_c's camera example: /dev/shm/tensorpool): one level down is looked at too.
    let top = dirs(std::path::Path::new("/dev/shm"));
    let below = top
        .iter()
        .filter(|p| !is_root(p))
        .flat_map(|p| dirs(p))
        .filter(is_root);
    let roots: Vec<_> = top.iter().filter(|p| is_root(p)).cloned().chain(below).collect();
    for root in roots {
        for ns in dirs(&root) {
            for stream in dirs(&ns) {
                for epoch in dirs(&stream) {
                    let Ok(r) = xmem_tensorpool::region::Region::open_any(&epoch.join("header.ring")) else {
                        continue;
                    };
                    let sb = r.superblock();
                    out.push(TpStream {
                        namespace: ns
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        stream_id: sb.stream_id,
                        epoch: sb.epoch,
                        dir: epoch.display().to_string(),
                        pid: sb.pid,
                        alive: xmem_core::os::process::exists(sb.pid as u32),
                        nslots: sb.nslots,
                    });
                }
            }
        }
    }
    out.sort_by_key(|s| (s.stream_id, s.epoch));
    out
}

/// Tensor-pool drivers, found by their lease counters in each live media driver under
/// /dev/shm: (driver pid, Aeron directory, leases).
fn tp_drivers() -> Vec<(u32, String, usize)> {
    let mut out: Vec<(u32, String, usize)> = Vec::new();
    for e in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let dir = e.path();
        if !dir.join("cnc.dat").exists() {
            continue;
        }
        if !matches!(
            xmem_aeron::driver_status(&dir),
            xmem_aeron::DriverStatus::Active { .. }
        ) {
            continue;
        }
        let Ok(counters) = xmem_aeron::read_counters(&dir) else {
            continue;
        };
        for (lease, _) in counters.iter().filter_map(xmem_tp_driver::leases::parse) {
            let d = dir.display().to_string();
            match out
                .iter_mut()
                .find(|(pid, a, _)| *pid == lease.driver_pid && *a == d)
            {
                Some(entry) => entry.2 += 1,
                None => out.push((lease.driver_pid, d, 1)),
            }
        }
    }
    out
}

fn print_tp(streams: &[TpStream], drivers: &[(u32, String, usize)]) -> std::io::Result<()> {
    if !streams.is_empty() {
        outln!()?;
        let rows: Vec<Vec<String>> = streams
            .iter()
            .map(|s| {
                vec![
                    s.stream_id.to_string(),
                    s.namespace.clone(),
                    s.epoch.to_string(),
                    s.nslots.to_string(),
                    s.pid.to_string(),
                    if s.alive { "yes" } else { "no" }.to_string(),
                    s.dir.clone(),
                ]
            })
            .collect();
        fmt::table(
            &[
                "TP STREAM",
                "NAMESPACE",
                "EPOCH",
                "SLOTS",
                "CREATOR",
                "ALIVE",
                "DIRECTORY",
            ],
            &rows,
        )?;
    }
    for (pid, dir, leases) in drivers {
        outln!("tensor-pool driver pid {pid} (Aeron {dir}): {leases} lease(s); `xmem tp leases --aeron-dir {dir}` lists them")?;
    }
    Ok(())
}

fn usage(e: &Entry) -> String {
    match &e.detail {
        Detail::Pool {
            buffers,
            in_use,
            processes,
            dead_processes,
        } => {
            let mut s = format!("{in_use}/{buffers} buffers, {processes} process(es)");
            if *dead_processes > 0 {
                s += &format!(", {dead_processes} dead (xmem clean returns their references)");
            }
            s
        }
        Detail::Segment {
            version,
            writer_alive,
            heartbeat_age,
            ..
        } => format!(
            "v{version}, writer {}, last write {} ago",
            if *writer_alive { "alive" } else { "gone" },
            fmt::duration(*heartbeat_age)
        ),
        Detail::Stream {
            pool,
            publisher_alive,
            published,
            subscribers,
        } => format!(
            "{published} frames, {subscribers} subscriber(s), publisher {}, pool {pool}",
            if *publisher_alive { "alive" } else { "gone" }
        ),
        Detail::Damaged(why) => format!("{why}; `xmem clean --damaged` removes it"),
        Detail::Unreadable(why) => format!("unreadable: {why}"),
        Detail::None => match &e.state {
            ObjectState::Damaged(why) => format!("{why}; `xmem clean --damaged` removes it"),
            ObjectState::Unreadable(why) => why.clone(),
            _ => String::new(),
        },
    }
}

pub(crate) fn entry_json(e: &Entry) -> serde_json::Value {
    let detail = match &e.detail {
        Detail::Pool {
            buffers,
            in_use,
            processes,
            dead_processes,
        } => {
            json!({"buffers": buffers, "in_use": in_use, "processes": processes, "dead_processes": dead_processes})
        }
        Detail::Segment {
            size,
            version,
            writer_alive,
            heartbeat_age,
        } => {
            json!({"size": size, "version": version, "writer_alive": writer_alive, "heartbeat_age_ns": heartbeat_age.as_nanos() as u64})
        }
        Detail::Stream {
            pool,
            publisher_alive,
            published,
            subscribers,
        } => {
            json!({"pool": pool, "publisher_alive": publisher_alive, "published": published, "subscribers": subscribers})
        }
        Detail::Unreadable(why) => json!({"error": why}),
        Detail::Damaged(_) | Detail::None => json!(null),
    };
    json!({
        "name": e.name,
        "path": e.path,
        "kind": e.kind.map(|k| k.to_string()),
        "state": entry_state_word(e),
        "damage": e.damage(),
        "unreadable": match &e.state { ObjectState::Unreadable(why) => Some(why.clone()), _ => None },
        "owner_pid": e.owner.map(|o| o.pid),
        "owner_alive": e.owner_liveness.map(liveness_word),
        "size": e.file_size,
        "created_unix_ns": e.created_unix_ns,
        "orphan": e.is_orphan(),
        "usage": detail,
    })
}

/// The entry's state in a word; an object whose own part is damaged reads "damaged" too.
pub(crate) fn entry_state_word(e: &Entry) -> &'static str {
    if e.damage().is_some() {
        "damaged"
    } else {
        state_word(&e.state)
    }
}

pub(crate) fn state_word(state: &ObjectState) -> &'static str {
    match state {
        ObjectState::Ready => "ready",
        ObjectState::Initialising => "initialising",
        ObjectState::Abandoned => "abandoned",
        ObjectState::Damaged(_) => "damaged",
        ObjectState::Unreadable(_) => "unreadable",
    }
}

pub(crate) fn liveness_word(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "yes",
        Liveness::Dead => "no",
        Liveness::Unknown => "?",
    }
}
