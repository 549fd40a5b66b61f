//! `xmem watch`

use std::time::{Duration, Instant};

use anyhow::Result;
use xmem_core::discovery::{self, Event};

use crate::fmt;

pub(crate) fn run(count: Option<usize>, duration: Option<Duration>) -> Result<()> {
    let mut w = discovery::watch()?;
    eprintln!("watching {} object(s); Ctrl-C to stop", w.known().len());
    let end = duration.map(|d| Instant::now() + d);
    let mut seen = 0;
    loop {
        let left = end.map(|e| e.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) || count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        let Some(event) = w.next(left)? else { continue };
        seen += 1;
        let now = fmt::clock();
        match event {
            Event::Created { name, kind, owner } => outln!(
                "{now} created     {name} ({}{})",
                kind.map_or("not an xmem object".to_string(), |k| k.to_string()),
                owner.map_or(String::new(), |p| format!(", owner pid {p}"))
            )?,
            Event::Removed { name } => outln!("{now} removed     {name}")?,
            Event::OwnerDied { name, kind, pid } => outln!(
                "{now} owner died  {name} ({}, pid {pid})",
                kind.map_or("?".to_string(), |k| k.to_string())
            )?,
        }
    }
}
