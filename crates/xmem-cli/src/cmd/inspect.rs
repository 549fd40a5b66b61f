//! `xmem inspect NAME`

use anyhow::{bail, Result};
use serde_json::{json, Value};
use xmem_core::object::{self, ObjectKind, ObjectState};
use xmem_core::os::ShmDir;
use xmem_core::pool::{BufferStatus, PoolSnapshot};
use xmem_core::Error;

use super::ls::liveness_word;
use crate::{fmt, Format};

pub(crate) fn run(name: &str, format: Format) -> Result<()> {
    let path = object::path_of(&ShmDir::default(), name)?;
    let Some(info) = object::probe(&path)? else {
        return Err(Error::NotFound {
            name: name.to_string(),
            path,
        }
        .into());
    };
    match (&info.state, info.kind) {
        (ObjectState::Ready, Some(ObjectKind::Pool)) => {
            let snap = xmem_core::pool::inspect_path(&path, name)?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&pool_json(&snap))?)?,
                Format::Text => print_pool(&snap)?,
            }
            Ok(())
        }
        (ObjectState::Ready, Some(ObjectKind::Segment)) => {
            let seg = xmem_core::segment::inspect_path(&path, name)?;
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&segment_json(name, &path, &seg))?
                )?,
                Format::Text => print_segment(name, &path, &seg)?,
            }
            Ok(())
        }
        (ObjectState::Ready, Some(ObjectKind::Stream)) => {
            let info = xmem_core::stream::inspect_path(&path, name)?;
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&stream_json(&info))?)?,
                Format::Text => print_stream(&info)?,
            }
            Ok(())
        }
        (ObjectState::Ready, Some(kind)) => bail!("{name} is a {kind}; this xmem cannot inspect that kind"),
        (ObjectState::Damaged(why), _) => bail!(
            "{} is damaged: {why}; remove it with `xmem clean --damaged`",
            path.display()
        ),
        (ObjectState::Abandoned, _) => bail!(
            "{} was abandoned by a creator that died; remove it with `xmem clean`",
            path.display()
        ),
        (ObjectState::Initialising, _) => bail!("{} is still being initialised", path.display()),
        (ObjectState::Unreadable(why), _) => bail!("{}: {why}", path.display()),
        (ObjectState::Ready, None) => bail!("{} has no kind", path.display()),
    }
}

fn status_word(s: BufferStatus) -> &'static str {
    match s {
        BufferStatus::Free => "free",
        BufferStatus::Writing => "writing",
        BufferStatus::Shared => "shared",
    }
}

fn device_kind_word(kind: xmem_core::DeviceKind) -> &'static str {
    match kind {
        xmem_core::DeviceKind::Cuda => "cuda",
        xmem_core::DeviceKind::HostStandIn => "host-stand-in",
        _ => "unknown",
    }
}

pub(crate) fn pool_json(s: &PoolSnapshot) -> Value {
    json!({
        "name": s.name,
        "kind": "pool",
        "path": s.path,
        "pool_id": format!("{:016x}", s.pool_id),
        "buffers": s.config.count,
        "buffer_size": s.config.size,
        "alignment": s.config.alignment,
        "stride": s.stride,
        "total_size": s.total_size,
        "storage": format!("{:?}", s.storage).to_lowercase(),
        "device": s.device.map(|d| json!({
            "kind": device_kind_word(d.kind),
            "uuid": d.uuid_text(),
            "allocation_bytes": d.bytes,
        })),
        "owner": {"pid": s.owner.pid, "alive": liveness_word(s.owner_liveness)},
        "created_unix_ns": s.created_unix_ns,
        "closing": s.closing,
        "free_hints": s.free_hints,
        "processes": s.processes.iter().map(|p| json!({
            "slot": p.slot,
            "pid": p.pid,
            "state": format!("{:?}", p.state).to_lowercase(),
            "alive": liveness_word(p.liveness),
            "command": p.command,
            "attached_unix_ns": p.attached_unix_ns,
            "holds": p.holds,
            "waits": p.waits,
            "timeouts": p.timeouts,
            "reclaimed_refs": p.reclaimed_refs,
            "keeps_hints_back": p.keeps_hints_back,
        })).collect::<Vec<_>>(),
        "buffer_states": s.buffers.iter().map(|b| json!({
            "index": b.index,
            "generation": b.generation,
            "status": status_word(b.status),
            "holders": b.holder_pids,
            "sequence": b.sequence,
            "timestamp_ns": b.timestamp_ns,
            "tensor": b.tensor.as_ref().map(|t| match t {
                Ok(d) => json!({"dtype": d.dtype().name(), "shape": d.shape(), "strides": d.strides(), "byte_offset": d.byte_offset()}),
                Err(e) => json!({"error": e}),
            }),
        })).collect::<Vec<_>>(),
    })
}

fn print_pool(s: &PoolSnapshot) -> std::io::Result<()> {
    outln!("pool {}  ({})", s.name, s.path.display())?;
    outln!(
        "  {} buffers × {} (stride {}, alignment {}), {} in all, {:?} storage",
        s.config.count,
        fmt::bytes(s.config.size),
        fmt::bytes(s.stride),
        s.config.alignment,
        fmt::bytes(s.total_size),
        s.storage
    )?;
    if let Some(d) = &s.device {
        outln!(
            "  device: {} {}, one allocation of {} (buffer i at i × stride)",
            device_kind_word(d.kind),
            d.uuid_text(),
            fmt::bytes(d.bytes)
        )?;
    }
    outln!(
        "  created by pid {} (alive: {}), {} ago; id {:016x}{}",
        s.owner.pid,
        liveness_word(s.owner_liveness),
        fmt::age(s.created_unix_ns),
        s.pool_id,
        if s.closing { "; closing" } else { "" }
    )?;
    outln!()?;
    let rows: Vec<Vec<String>> = s
        .processes
        .iter()
        .map(|p| {
            vec![
                p.slot.to_string(),
                p.pid.to_string(),
                p.command.clone().unwrap_or_else(|| "?".into()),
                liveness_word(p.liveness).into(),
                format!("{:?}", p.state).to_lowercase(),
                p.holds.to_string(),
                p.waits.to_string(),
                p.timeouts.to_string(),
                p.reclaimed_refs.to_string(),
            ]
        })
        .collect();
    fmt::table(
        &[
            "SLOT",
            "PID",
            "COMMAND",
            "ALIVE",
            "STATE",
            "HOLDS",
            "WAITS",
            "TIMEOUTS",
            "RECLAIMED",
        ],
        &rows,
    )?;
    outln!()?;
    let rows: Vec<Vec<String>> = s
        .buffers
        .iter()
        .map(|b| {
            let tensor = match &b.tensor {
                Some(Ok(d)) => format!("{} {:?}", d.dtype(), d.shape()),
                Some(Err(e)) => format!("invalid: {e}"),
                None => String::new(),
            };
            vec![
                b.index.to_string(),
                b.generation.to_string(),
                status_word(b.status).into(),
                b.holder_pids
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                if b.sequence != 0 {
                    b.sequence.to_string()
                } else {
                    String::new()
                },
                tensor,
            ]
        })
        .collect();
    fmt::table(&["BUFFER", "GEN", "STATE", "HOLDERS", "SEQ", "TENSOR"], &rows)?;
    Ok(())
}

fn segment_json(name: &str, path: &std::path::Path, s: &xmem_core::segment::SegmentInfo) -> Value {
    json!({
        "name": name,
        "kind": "segment",
        "path": path,
        "size": s.size,
        "page_size": s.page_size,
        "version": s.version,
        "writes": s.version / 2,
        "writer": {"pid": s.writer.pid, "alive": s.writer_alive},
        "heartbeat_age_ns": s.heartbeat_age.as_nanos() as u64,
        "typed_value_size": s.type_size,
        "huge_pages": s.huge_pages,
        "locked_in_memory": s.locked,
        "numa_node": s.numa_node,
    })
}

fn print_segment(
    name: &str,
    path: &std::path::Path,
    s: &xmem_core::segment::SegmentInfo,
) -> std::io::Result<()> {
    outln!("segment {name}  ({})", path.display())?;
    outln!(
        "  {} of data on {} pages{}{}{}",
        fmt::bytes(s.size),
        fmt::bytes(s.page_size),
        if s.huge_pages { " (huge)" } else { "" },
        if s.locked { ", locked in RAM" } else { "" },
        s.numa_node.map_or(String::new(), |n| format!(", NUMA node {n}"))
    )?;
    if s.type_size > 0 {
        outln!("  holds a typed value of {} bytes", s.type_size)?;
    }
    outln!(
        "  writer pid {} ({}), version {} ({} writes), last write or heartbeat {} ago",
        s.writer.pid,
        if s.writer_alive { "alive" } else { "gone" },
        s.version,
        s.version / 2,
        fmt::duration(s.heartbeat_age)
    )?;
    Ok(())
}

fn policy_word(p: xmem_core::stream::Policy) -> String {
    match p {
        xmem_core::stream::Policy::Block { .. } => "block".into(),
        xmem_core::stream::Policy::DropOldest => "drop-oldest".into(),
        xmem_core::stream::Policy::Latest => "latest".into(),
    }
}

fn member_word(m: xmem_core::stream::MemberState) -> &'static str {
    match m {
        xmem_core::stream::MemberState::Free => "free",
        xmem_core::stream::MemberState::Joining => "joining",
        xmem_core::stream::MemberState::Active => "active",
        xmem_core::stream::MemberState::Leaving => "leaving",
    }
}

pub(crate) fn stream_json(s: &xmem_core::stream::StreamInfo) -> Value {
    json!({
        "name": s.name,
        "kind": "stream",
        "pool": s.pool,
        "publisher": {"pid": s.publisher_pid, "publishing": s.publisher_alive},
        "policy": policy_word(s.policy),
        "depth": s.depth,
        "history": s.history,
        "published": s.published,
        "max_subscribers": s.max_subscribers,
        "subscribers": s.subscribers.iter().map(|m| json!({
            "record": m.record,
            "pid": m.pid,
            "state": member_word(m.state),
            "alive": m.alive,
            "damage": m.damage,
            "received": m.received,
            "dropped": m.dropped,
            "queued": m.queued,
            "woken": m.woken,
        })).collect::<Vec<_>>(),
    })
}

fn print_stream(s: &xmem_core::stream::StreamInfo) -> std::io::Result<()> {
    outln!("stream {}  (frames in pool {})", s.name, s.pool)?;
    outln!(
        "  publisher pid {} ({}), policy {}, queue depth {}, history {}, {} frame(s) published",
        s.publisher_pid,
        if s.publisher_alive { "publishing" } else { "gone" },
        policy_word(s.policy),
        s.depth,
        s.history,
        s.published
    )?;
    outln!(
        "  {} of at most {} subscriber(s)\n",
        s.subscribers.len(),
        s.max_subscribers
    )?;
    let rows: Vec<Vec<String>> = s
        .subscribers
        .iter()
        .map(|m| {
            vec![
                m.record.to_string(),
                m.pid.to_string(),
                if m.alive { "yes" } else { "no" }.to_string(),
                if m.damage.is_some() {
                    "damaged"
                } else {
                    member_word(m.state)
                }
                .to_string(),
                // Counters that cannot be true are not shown as if they were.
                if m.damage.is_some() {
                    "?".into()
                } else {
                    m.received.to_string()
                },
                if m.damage.is_some() {
                    "?".into()
                } else {
                    m.dropped.to_string()
                },
                m.queued.to_string(),
                m.woken.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        fmt::table(
            &[
                "RECORD", "PID", "ALIVE", "STATE", "RECEIVED", "DROPPED", "QUEUED", "WOKEN",
            ],
            &rows,
        )?;
    }
    for m in s.subscribers.iter() {
        if let Some(why) = &m.damage {
            outln!("  record {} is damaged: {why}", m.record)?;
        }
    }
    Ok(())
}
