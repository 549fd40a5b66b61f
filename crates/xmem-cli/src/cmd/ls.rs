//! `xmem ls`

use anyhow::Result;
use serde_json::json;
use xmem_core::discovery::{self, Detail, Entry};
use xmem_core::object::ObjectState;
use xmem_core::os::{Liveness, ShmDir};

use crate::{fmt, Format};

pub fn run(format: Format) -> Result<()> {
    let entries = discovery::list()?;
    match format {
        Format::Json => {
            let items: Vec<_> = entries.iter().map(entry_json).collect();
            outln!("{}", serde_json::to_string_pretty(&items)?)?;
        }
        Format::Text if entries.is_empty() => {
            outln!("no xmem objects in {}", ShmDir::default().path().display())?
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
        }
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

pub fn entry_json(e: &Entry) -> serde_json::Value {
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
pub fn entry_state_word(e: &Entry) -> &'static str {
    if e.damage().is_some() {
        "damaged"
    } else {
        state_word(&e.state)
    }
}

pub fn state_word(state: &ObjectState) -> &'static str {
    match state {
        ObjectState::Ready => "ready",
        ObjectState::Initialising => "initialising",
        ObjectState::Abandoned => "abandoned",
        ObjectState::Damaged(_) => "damaged",
        ObjectState::Unreadable(_) => "unreadable",
    }
}

pub fn liveness_word(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "yes",
        Liveness::Dead => "no",
        Liveness::Unknown => "?",
    }
}
