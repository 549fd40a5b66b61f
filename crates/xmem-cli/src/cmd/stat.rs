//! `xmem stat` and `xmem top`: every object's counters, read from the objects themselves (no
//! daemon, nothing to enable). `stat` prints one sample for scripts and scrapers (text, JSON,
//! Prometheus's text format); `top` redraws a live view in place, with rates taken between one
//! refresh and the next, like htop or AeronStat.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use xmem_core::discovery;
use xmem_core::object::{ObjectKind, ObjectState};
use xmem_core::os::{Liveness, ShmDir};
use xmem_core::pool::{BufferStatus, PoolSnapshot, SlotState};
use xmem_core::segment::SegmentInfo;
use xmem_core::stream::StreamInfo;

use crate::fmt;

/// What `stat` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StatFormat {
    /// Tables for people.
    Text,
    /// JSON for programs.
    Json,
    /// Prometheus's text exposition format, for a scraper (node_exporter's textfile collector,
    /// or any exporter that runs a command).
    Prometheus,
}

/// One reading of every object.
struct Sample {
    at: Instant,
    pools: Vec<PoolStat>,
    streams: Vec<StreamStat>,
    segments: Vec<SegmentStat>,
    /// Objects that could not be read, and why (damaged, abandoned, another user's).
    unreadable: Vec<(String, String)>,
}

struct PoolStat {
    name: String,
    buffers: u32,
    free: u32,
    /// Live attached processes.
    holders: usize,
    /// Attached processes that died, their references not yet returned.
    dead: usize,
    waits: u64,
    timeouts: u64,
    reclaimed: u64,
}

struct SubscriberStat {
    pid: u32,
    alive: bool,
    received: u64,
    dropped: u64,
    queued: u64,
}

struct StreamStat {
    name: String,
    publisher_pid: u32,
    publisher_alive: bool,
    published: u64,
    depth: u32,
    subscribers: Vec<SubscriberStat>,
}

impl StreamStat {
    fn dropped(&self) -> u64 {
        self.subscribers.iter().map(|s| s.dropped).sum()
    }

    /// Frames the slowest subscriber has queued and not yet taken.
    fn lag(&self) -> u64 {
        self.subscribers.iter().map(|s| s.queued).max().unwrap_or(0)
    }
}

struct SegmentStat {
    name: String,
    bytes: u64,
    /// Writes since creation (the version grows by 2 per write).
    writes: u64,
    writer_pid: u32,
    writer_alive: bool,
    last_write: Duration,
}

impl PoolStat {
    fn of(s: &PoolSnapshot) -> PoolStat {
        let active = |p: &&xmem_core::pool::ProcessInfo| p.state == SlotState::Active;
        PoolStat {
            name: s.name.clone(),
            buffers: s.config.count,
            free: s
                .buffers
                .iter()
                .filter(|b| b.status == BufferStatus::Free)
                .count() as u32,
            holders: s
                .processes
                .iter()
                .filter(active)
                .filter(|p| p.liveness != Liveness::Dead)
                .count(),
            dead: s
                .processes
                .iter()
                .filter(|p| p.liveness == Liveness::Dead || p.state == SlotState::Reclaiming)
                .count(),
            waits: s.processes.iter().map(|p| p.waits).sum(),
            timeouts: s.processes.iter().map(|p| p.timeouts).sum(),
            reclaimed: s.processes.iter().map(|p| p.reclaimed_refs).sum(),
        }
    }
}

impl StreamStat {
    fn of(s: &StreamInfo) -> StreamStat {
        StreamStat {
            name: s.name.clone(),
            publisher_pid: s.publisher_pid,
            publisher_alive: s.publisher_alive,
            published: s.published,
            depth: s.depth,
            subscribers: s
                .subscribers
                .iter()
                .filter(|m| m.damage.is_none())
                .map(|m| SubscriberStat {
                    pid: m.pid,
                    alive: m.alive,
                    received: m.received,
                    dropped: m.dropped,
                    queued: m.queued,
                })
                .collect(),
        }
    }
}

impl SegmentStat {
    fn of(name: &str, s: &SegmentInfo) -> SegmentStat {
        SegmentStat {
            name: name.to_string(),
            bytes: s.size,
            writes: s.version / 2,
            writer_pid: s.writer.pid,
            writer_alive: s.writer_alive,
            last_write: s.heartbeat_age,
        }
    }
}

/// Reads every object in the shared-memory directory. One that cannot be read is listed with
/// its reason rather than failing the whole sample.
fn collect() -> Result<Sample> {
    let mut sample = Sample {
        at: Instant::now(),
        pools: Vec::new(),
        streams: Vec::new(),
        segments: Vec::new(),
        unreadable: Vec::new(),
    };
    for e in discovery::list()? {
        let why = match (&e.state, e.kind) {
            (ObjectState::Ready, Some(ObjectKind::Pool)) => {
                match xmem_core::pool::inspect_path(&e.path, &e.name) {
                    Ok(s) => {
                        sample.pools.push(PoolStat::of(&s));
                        continue;
                    }
                    Err(err) => err.to_string(),
                }
            }
            (ObjectState::Ready, Some(ObjectKind::Stream)) => {
                match xmem_core::stream::inspect_path(&e.path, &e.name) {
                    Ok(s) => {
                        sample.streams.push(StreamStat::of(&s));
                        continue;
                    }
                    Err(err) => err.to_string(),
                }
            }
            (ObjectState::Ready, Some(ObjectKind::Segment)) => {
                match xmem_core::segment::inspect_path(&e.path, &e.name) {
                    Ok(s) => {
                        sample.segments.push(SegmentStat::of(&e.name, &s));
                        continue;
                    }
                    Err(err) => err.to_string(),
                }
            }
            // Half made: it will be ready, or abandoned, by the next sample.
            (ObjectState::Initialising, _) => continue,
            (ObjectState::Ready, _) => "a kind this xmem does not know".to_string(),
            (ObjectState::Abandoned, _) => {
                "abandoned by a creator that died; `xmem clean` removes it".to_string()
            }
            (ObjectState::Damaged(why), _) => {
                format!("damaged: {why}; `xmem clean --damaged` removes it")
            }
            (ObjectState::Unreadable(why), _) => why.clone(),
        };
        sample.unreadable.push((e.name.clone(), why));
    }
    Ok(sample)
}

/// `xmem stat`: one sample, printed.
pub(crate) fn stat(format: StatFormat) -> Result<()> {
    let s = collect()?;
    match format {
        StatFormat::Text => {
            for line in text_lines(&s, None) {
                outln!("{line}")?;
            }
        }
        StatFormat::Json => outln!("{}", serde_json::to_string_pretty(&json_of(&s))?)?,
        StatFormat::Prometheus => out!("{}", prometheus(&s))?,
    }
    Ok(())
}

fn alive_word(alive: bool) -> &'static str {
    if alive {
        "live"
    } else {
        "dead"
    }
}

/// Per-second change of a counter between two samples (none for the first, or a reset).
fn rate(now: u64, before: Option<u64>, secs: f64) -> String {
    match before {
        Some(b) if now >= b && secs > 0.0 => format!("{:.0}", (now - b) as f64 / secs),
        _ => "-".into(),
    }
}

/// The tables of a sample; with the previous sample, counters become rates.
fn text_lines(s: &Sample, prev: Option<&Sample>) -> Vec<String> {
    let secs = prev.map_or(0.0, |p| s.at.duration_since(p.at).as_secs_f64());
    let before = |f: &dyn Fn(&Sample) -> Option<u64>| prev.and_then(f);
    let mut lines = Vec::new();
    let rows: Vec<Vec<String>> = s
        .pools
        .iter()
        .map(|p| {
            let waits = match prev {
                Some(_) => rate(
                    p.waits,
                    before(&|q| q.pools.iter().find(|x| x.name == p.name).map(|x| x.waits)),
                    secs,
                ),
                None => p.waits.to_string(),
            };
            vec![
                p.name.clone(),
                p.buffers.to_string(),
                p.free.to_string(),
                p.holders.to_string(),
                p.dead.to_string(),
                waits,
                p.timeouts.to_string(),
                p.reclaimed.to_string(),
            ]
        })
        .collect();
    let waits = if prev.is_some() { "WAITS/S" } else { "WAITS" };
    lines.extend(fmt::table_lines(
        &[
            "POOL",
            "BUFFERS",
            "FREE",
            "HOLDERS",
            "DEAD",
            waits,
            "TIMEOUTS",
            "RECLAIMED",
        ],
        &rows,
    ));
    lines.push(String::new());
    let rows: Vec<Vec<String>> = s
        .streams
        .iter()
        .map(|t| {
            let old = prev.and_then(|q| q.streams.iter().find(|x| x.name == t.name));
            let (published, drops) = match prev {
                Some(_) => (
                    rate(t.published, old.map(|o| o.published), secs),
                    rate(t.dropped(), old.map(StreamStat::dropped), secs),
                ),
                None => (t.published.to_string(), t.dropped().to_string()),
            };
            vec![
                t.name.clone(),
                format!("{} {}", t.publisher_pid, alive_word(t.publisher_alive)),
                published,
                t.subscribers.len().to_string(),
                t.depth.to_string(),
                t.lag().to_string(),
                drops,
                t.dropped().to_string(),
            ]
        })
        .collect();
    let (published, drops) = if prev.is_some() {
        ("RATE/S", "DROPS/S")
    } else {
        ("PUBLISHED", "DROPS")
    };
    lines.extend(fmt::table_lines(
        &[
            "STREAM",
            "PUBLISHER",
            published,
            "SUBS",
            "DEPTH",
            "LAG",
            drops,
            "DROPPED",
        ],
        &rows,
    ));
    lines.push(String::new());
    let rows: Vec<Vec<String>> = s
        .segments
        .iter()
        .map(|g| {
            let writes = match prev {
                Some(_) => rate(
                    g.writes,
                    before(&|q| q.segments.iter().find(|x| x.name == g.name).map(|x| x.writes)),
                    secs,
                ),
                None => g.writes.to_string(),
            };
            vec![
                g.name.clone(),
                format!("{} {}", g.writer_pid, alive_word(g.writer_alive)),
                writes,
                format!("{} ago", fmt::duration(g.last_write)),
                fmt::bytes(g.bytes),
            ]
        })
        .collect();
    let writes = if prev.is_some() { "WRITES/S" } else { "WRITES" };
    lines.extend(fmt::table_lines(
        &["SEGMENT", "WRITER", writes, "LAST WRITE", "SIZE"],
        &rows,
    ));
    if !s.unreadable.is_empty() {
        lines.push(String::new());
        lines.extend(s.unreadable.iter().map(|(n, why)| format!("{n}: {why}")));
    }
    lines
}

fn json_of(s: &Sample) -> Value {
    json!({
        "pools": s.pools.iter().map(|p| json!({
            "name": p.name, "buffers": p.buffers, "free": p.free, "holders": p.holders,
            "dead_holders": p.dead, "waits": p.waits, "wait_timeouts": p.timeouts,
            "reclaimed_references": p.reclaimed,
        })).collect::<Vec<_>>(),
        "streams": s.streams.iter().map(|t| json!({
            "name": t.name, "publisher": {"pid": t.publisher_pid, "alive": t.publisher_alive},
            "published": t.published, "depth": t.depth, "lag": t.lag(), "dropped": t.dropped(),
            "subscribers": t.subscribers.iter().map(|m| json!({
                "pid": m.pid, "alive": m.alive, "received": m.received, "dropped": m.dropped,
                "queued": m.queued,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "segments": s.segments.iter().map(|g| json!({
            "name": g.name, "bytes": g.bytes, "writes": g.writes,
            "writer": {"pid": g.writer_pid, "alive": g.writer_alive},
            "last_write_seconds": g.last_write.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "unreadable": s.unreadable.iter().map(|(n, why)| json!({"name": n, "reason": why}))
            .collect::<Vec<_>>(),
    })
}

/// A label value as the exposition format quotes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric of the exposition: name, type, help, and its samples (labels, value).
type Metric = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

/// Prometheus's text format: each metric's HELP and TYPE once, then its samples.
fn prometheus(s: &Sample) -> String {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut metric = |name, kind, help, samples: Vec<(String, f64)>| {
        metrics.push((name, kind, help, samples));
    };
    let pool = |f: &dyn Fn(&PoolStat) -> f64| -> Vec<(String, f64)> {
        s.pools
            .iter()
            .map(|p| (format!("pool=\"{}\"", label(&p.name)), f(p)))
            .collect()
    };
    metric(
        "xmem_pool_buffers",
        "gauge",
        "Buffers in the pool.",
        pool(&|p| p.buffers.into()),
    );
    metric(
        "xmem_pool_free_buffers",
        "gauge",
        "Buffers no process holds.",
        pool(&|p| p.free.into()),
    );
    metric(
        "xmem_pool_processes",
        "gauge",
        "Live processes attached to the pool.",
        pool(&|p| p.holders as f64),
    );
    metric(
        "xmem_pool_dead_processes",
        "gauge",
        "Attached processes that died, their references not yet returned (xmem clean returns them).",
        pool(&|p| p.dead as f64),
    );
    metric(
        "xmem_pool_waits_total",
        "counter",
        "Times attached processes parked waiting for a free buffer.",
        pool(&|p| p.waits as f64),
    );
    metric(
        "xmem_pool_wait_timeouts_total",
        "counter",
        "Waits for a free buffer that timed out.",
        pool(&|p| p.timeouts as f64),
    );
    metric(
        "xmem_pool_reclaimed_references_total",
        "counter",
        "References of dead processes returned to the pool.",
        pool(&|p| p.reclaimed as f64),
    );
    let stream = |f: &dyn Fn(&StreamStat) -> f64| -> Vec<(String, f64)> {
        s.streams
            .iter()
            .map(|t| (format!("stream=\"{}\"", label(&t.name)), f(t)))
            .collect()
    };
    metric(
        "xmem_stream_published_frames_total",
        "counter",
        "Frames the stream's publisher has published.",
        stream(&|t| t.published as f64),
    );
    metric(
        "xmem_stream_publisher_alive",
        "gauge",
        "1 while the stream's publisher lives.",
        stream(&|t| f64::from(u8::from(t.publisher_alive))),
    );
    metric(
        "xmem_stream_subscribers",
        "gauge",
        "Subscribers of the stream.",
        stream(&|t| t.subscribers.len() as f64),
    );
    metric(
        "xmem_stream_queue_depth",
        "gauge",
        "Frames each subscriber's queue holds.",
        stream(&|t| t.depth.into()),
    );
    let subscriber = |f: &dyn Fn(&SubscriberStat) -> f64| -> Vec<(String, f64)> {
        s.streams
            .iter()
            .flat_map(|t| {
                t.subscribers
                    .iter()
                    .map(move |m| (format!("stream=\"{}\",pid=\"{}\"", label(&t.name), m.pid), f(m)))
            })
            .collect()
    };
    metric(
        "xmem_stream_subscriber_received_frames_total",
        "counter",
        "Frames the subscriber has received.",
        subscriber(&|m| m.received as f64),
    );
    metric(
        "xmem_stream_subscriber_dropped_frames_total",
        "counter",
        "Frames dropped for the subscriber (its queue was full).",
        subscriber(&|m| m.dropped as f64),
    );
    metric(
        "xmem_stream_subscriber_queued_frames",
        "gauge",
        "Frames queued for the subscriber, not yet received.",
        subscriber(&|m| m.queued as f64),
    );
    let segment = |f: &dyn Fn(&SegmentStat) -> f64| -> Vec<(String, f64)> {
        s.segments
            .iter()
            .map(|g| (format!("segment=\"{}\"", label(&g.name)), f(g)))
            .collect()
    };
    metric(
        "xmem_segment_writes_total",
        "counter",
        "Writes to the segment.",
        segment(&|g| g.writes as f64),
    );
    metric(
        "xmem_segment_writer_alive",
        "gauge",
        "1 while the segment's writer lives.",
        segment(&|g| f64::from(u8::from(g.writer_alive))),
    );
    metric(
        "xmem_segment_last_write_age_seconds",
        "gauge",
        "Seconds since the segment's last write or heartbeat.",
        segment(&|g| g.last_write.as_secs_f64()),
    );
    metric(
        "xmem_segment_bytes",
        "gauge",
        "Bytes of the segment's value.",
        segment(&|g| g.bytes as f64),
    );
    metric(
        "xmem_objects_unreadable",
        "gauge",
        "Objects that could not be read (damaged, abandoned, another user's).",
        vec![(String::new(), s.unreadable.len() as f64)],
    );
    let mut out = String::new();
    for (name, kind, help, samples) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            if labels.is_empty() {
                out.push_str(&format!("{name} {v}\n"));
            } else {
                out.push_str(&format!("{name}{{{labels}}} {v}\n"));
            }
        }
    }
    out
}

/// The terminal in raw mode on the alternate screen, the cursor hidden, while it lives: a
/// quit, an error or a panic give the user's screen back as it was.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        crossterm::terminal::enable_raw_mode()?;
        let screen = Screen;
        crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Draws `lines` from the top left, each cut to the terminal's width and the rest of its row
/// cleared, so the view changes in place without flicker.
fn draw(lines: &[String]) -> Result<()> {
    use crossterm::terminal::{Clear, ClearType};
    let (cols, rows) = crossterm::terminal::size()?;
    let mut out = std::io::stdout().lock();
    let shown = lines.len().min(usize::from(rows));
    for (i, line) in lines.iter().take(shown).enumerate() {
        let cut: String = line.chars().take(usize::from(cols)).collect();
        crossterm::queue!(
            out,
            crossterm::cursor::MoveTo(0, i as u16),
            crossterm::style::Print(cut),
            Clear(ClearType::UntilNewLine)
        )?;
    }
    crossterm::queue!(
        out,
        crossterm::cursor::MoveTo(0, shown as u16),
        Clear(ClearType::FromCursorDown)
    )?;
    out.flush()?;
    Ok(())
}

/// `xmem top`: the live view, refreshed every `interval` until `q`, Esc or Ctrl-C.
pub(crate) fn top(interval: Duration) -> Result<()> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    if !std::io::stdout().is_terminal() {
        bail!("xmem top draws on a terminal; for scripts use `xmem stat` (--format json or prometheus)");
    }
    let dir = ShmDir::default().path().display().to_string();
    let _screen = Screen::enter()?;
    let mut prev: Option<Sample> = None;
    loop {
        let now = collect()?;
        let mut lines = vec![
            format!(
                "xmem top  {dir}  {}  {} pools, {} streams, {} segments  (every {}; q quits)",
                fmt::clock(),
                now.pools.len(),
                now.streams.len(),
                now.segments.len(),
                fmt::duration(interval),
            ),
            String::new(),
        ];
        lines.extend(text_lines(&now, prev.as_ref()));
        draw(&lines)?;
        prev = Some(now);
        let next = Instant::now() + interval;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() || !event::poll(left)? {
                break;
            }
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    _ => {}
                },
                Event::Resize(..) => break,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_quotes_label_values_and_names_each_metric_once() {
        let s = Sample {
            at: Instant::now(),
            pools: Vec::new(),
            streams: vec![StreamStat {
                name: "a\"b\\c".into(),
                publisher_pid: 7,
                publisher_alive: true,
                published: 3,
                depth: 4,
                subscribers: Vec::new(),
            }],
            segments: Vec::new(),
            unreadable: Vec::new(),
        };
        let text = prometheus(&s);
        assert!(
            text.contains("xmem_stream_published_frames_total{stream=\"a\\\"b\\\\c\"} 3\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE xmem_stream_published_frames_total counter")
                .count(),
            1
        );
        assert!(text.ends_with("xmem_objects_unreadable 0\n"), "{text}");
    }

    #[test]
    fn rates_need_two_samples_and_survive_a_reset() {
        assert_eq!(rate(150, Some(50), 2.0), "50");
        assert_eq!(rate(150, None, 2.0), "-");
        assert_eq!(rate(10, Some(50), 2.0), "-");
    }
}
