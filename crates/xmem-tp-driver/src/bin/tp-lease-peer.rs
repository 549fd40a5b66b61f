//! A driver client in a process of its own, for the driver's kill and restart tests:
//! `tp-lease-peer AERON_DIR CONTROL_STREAM STREAM producer|consumer [--keepalive-ms N]
//! [--exit-on-loss]`. It attaches, prints `attached lease=… client=… epoch=…`, keeps the lease,
//! prints each event, and reattaches with backoff when the lease ends (or exits 0 with
//! `--exit-on-loss`). A producer also writes each granted epoch's regions (opened, never created).

use std::time::{Duration, Instant};

use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tensorpool::uri::ShmUri;
use xmem_tp_control::Endpoint;
use xmem_tp_driver::{backoff, DriverClient, DriverClientOptions, Role};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, control, stream, role, ..] = args.as_slice() else {
        eprintln!("usage: tp-lease-peer AERON_DIR CONTROL_STREAM STREAM producer|consumer [--keepalive-ms N] [--exit-on-loss]");
        std::process::exit(2);
    };
    let flag = |name: &str| args.iter().rposition(|a| a == name);
    let keepalive = flag("--keepalive-ms")
        .and_then(|i| args.get(i + 1))
        .map_or(1000, |v| v.parse().expect("--keepalive-ms N"));
    let exit_on_loss = flag("--exit-on-loss").is_some();
    let role = if role == "producer" {
        Role::Producer
    } else {
        Role::Consumer
    };
    let stream: u32 = stream.parse().expect("STREAM");
    let control = Endpoint::tp(control.parse().expect("CONTROL_STREAM"));
    let client = xmem_aeron::Client::connect(&xmem_aeron::ClientOptions {
        dir: Some(dir.into()),
        ..Default::default()
    })
    .expect("media driver");
    let mut dc = DriverClient::new(
        &client,
        DriverClientOptions {
            announce: control.clone(),
            control,
            keepalive_interval: Duration::from_millis(keepalive),
            ..Default::default()
        },
    )
    .expect("driver client");
    let mut failures = 0;
    loop {
        let attachment = match dc.attach(stream, role, 0) {
            Ok(a) => a.clone(),
            Err(e) => {
                println!("attach failed: {e}");
                std::thread::sleep(backoff(failures));
                failures += 1;
                continue;
            }
        };
        failures = 0;
        let _regions = (role == Role::Producer).then(|| {
            let a = &attachment.grant.announce;
            // <base>/tensorpool-<user>/<ns>/<stream>/<epoch>/header.ring: the base is five up.
            let uri = ShmUri::parse(&a.header_region_uri).expect("a granted URI");
            let dir = uri
                .path()
                .ancestors()
                .nth(5)
                .expect("canonical layout")
                .to_path_buf();
            TpProducer::attach(a, &AllowedDirs::new([dir]).expect("base dir")).expect("regions")
        });
        println!(
            "attached lease={} client={} epoch={} node={}",
            attachment.grant.lease_id,
            attachment.client_id,
            attachment.grant.announce.epoch,
            attachment.grant.node_id.unwrap_or(0)
        );
        let since = Instant::now();
        'held: loop {
            for e in dc.poll().expect("aeron") {
                println!("event {e:?} after {} ms", since.elapsed().as_millis());
                if e.ends_lease() {
                    break 'held;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if exit_on_loss {
            return;
        }
    }
}
