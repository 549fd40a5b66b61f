//! `xmem ls`

use anyhow::Result;
use serde_json::json;
use xmem_core::object::{self, ObjectKind, ObjectState};
use xmem_core::os::{Liveness, ShmDir};

use crate::{fmt, Format};

pub fn run(format: Format) -> Result<()> {
    let dir = ShmDir::default();
    let objects = object::list(&dir)?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for info in &objects {
        let mut usage = String::new();
        let mut detail = json!(null);
        if info.kind == Some(ObjectKind::Pool) && info.state == ObjectState::Ready {
            match xmem_core::pool::inspect_path(&info.path, &info.name) {
                Ok(snap) => {
                    let used = snap.buffers.iter().filter(|b| !b.holder_slots.is_empty()).count();
                    let alive = snap
                        .processes
                        .iter()
                        .filter(|p| p.liveness != Liveness::Dead)
                        .count();
                    usage = format!("{used}/{} buffers, {alive} process(es)", snap.config.count);
                    detail = json!({"buffers": snap.config.count, "in_use": used, "processes": alive});
                }
                Err(e) => usage = format!("unreadable: {e}"),
            }
        }
        let state = state_word(&info.state);
        let alive = info.owner_liveness.map(liveness_word).unwrap_or("?");
        rows.push(vec![
            info.name.clone(),
            info.kind.map(|k| k.to_string()).unwrap_or_else(|| "?".into()),
            state.to_string(),
            info.owner
                .map(|o| o.pid.to_string())
                .unwrap_or_else(|| "?".into()),
            alive.to_string(),
            fmt::bytes(info.file_size),
            fmt::age(if info.created_unix_ns != 0 {
                info.created_unix_ns
            } else {
                info.modified_unix_ns
            }),
            usage,
        ]);
        items.push(json!({
            "name": info.name,
            "path": info.path,
            "kind": info.kind.map(|k| k.to_string()),
            "state": state,
            "detail": match &info.state { ObjectState::Damaged(d) => Some(d.clone()), _ => None },
            "owner_pid": info.owner.map(|o| o.pid),
            "owner_alive": info.owner_liveness.map(liveness_word),
            "size": info.file_size,
            "created_unix_ns": info.created_unix_ns,
            "usage": detail,
        }));
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Format::Text if rows.is_empty() => println!("no xmem objects in {}", dir.path().display()),
        Format::Text => fmt::table(
            &["NAME", "KIND", "STATE", "OWNER", "ALIVE", "SIZE", "AGE", "USE"],
            &rows,
        ),
    }
    Ok(())
}

pub fn state_word(state: &ObjectState) -> &'static str {
    match state {
        ObjectState::Ready => "ready",
        ObjectState::Initialising => "initialising",
        ObjectState::Abandoned => "abandoned",
        ObjectState::Damaged(_) => "damaged",
    }
}

pub fn liveness_word(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "yes",
        Liveness::Dead => "no",
        Liveness::Unknown => "?",
    }
}
