//! The driver's configuration: tensor_pool_c's files load, the environment overrides, bad keys
//! and values are refused in one line that names them.

use std::collections::HashMap;
use std::process::Command;

use xmem_tp_driver::DriverConfig;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<DriverConfig, String> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    DriverConfig::parse(text, "test.toml", |k| env.get(k).cloned()).map_err(|e| e.to_string())
}

/// The shapes of tensor_pool_c's example configs (its `config/driver_integration_*.toml` and
/// `docs/examples/driver_camera_example.toml`): inline pool tables and arrays of tables, a
/// `[supervisor]` section, an empty `aeron_dir`.
const C_SHAPED: &str = r#"
[driver]
instance_id = "driver-example"
aeron_dir = ""
control_channel = "aeron:ipc?term-length=4m"
control_stream_id = 1000
announce_channel = "aeron:ipc?term-length=4m"
announce_stream_id = 1001
qos_channel = "aeron:ipc?term-length=4m"
qos_stream_id = 1200
stream_id_range = "20000-29999"
descriptor_stream_id_range = "31000-31999"
control_stream_id_range = "32000-32999"

[shm]
base_dir = "/dev/shm"
namespace = "default"
require_hugepages = false
page_size_bytes = 4096
permissions_mode = "660"
allowed_base_dirs = ["/dev/shm"]

[policies]
allow_dynamic_streams = true
default_profile = "camera"
announce_period_ms = 1000
lease_keepalive_interval_ms = 1000
lease_expiry_grace_intervals = 3
node_id_reuse_cooldown_ms = 1000
prefault_shm = true
mlock_shm = false
epoch_gc_enabled = true
epoch_gc_keep = 2
epoch_gc_min_age_ns = 3000000000
shutdown_timeout_ms = 2000

[profiles.camera]
header_nslots = 64
payload_pools = [
  { pool_id = 1, stride_bytes = 1048576 }
]

[profiles.default]
header_nslots = 1024

[[profiles.default.payload_pools]]
pool_id = 1
stride_bytes = 8388608

[streams.cam1]
stream_id = 10000
profile = "camera"

[supervisor]
control_channel = "aeron:ipc?term-length=4m"
control_stream_id = 1000
consumer_capacity = 256
consumer_stale_ms = 5000
per_consumer_enabled = true
per_consumer_descriptor_base = 31000
per_consumer_descriptor_range = 1000
force_no_shm = false
force_mode = 0
payload_fallback_uri = ""
"#;

#[test]
fn tensor_pool_c_configs_load_unchanged() {
    let c = parse(C_SHAPED, &[]).unwrap();
    assert_eq!(c.driver.control_stream_id, 1000);
    assert_eq!(c.announce(), ("aeron:ipc?term-length=4m".to_string(), 1001));
    assert_eq!(c.profiles["camera"].header_nslots, 64);
    assert_eq!(c.profiles["default"].payload_pools[0].stride_bytes, 8_388_608);
    assert_eq!(c.streams["cam1"].stream_id, 10000);
    assert_eq!(c.ranges().streams, Some(20000..=29999));
    assert_eq!(
        c.supervisor.as_ref().unwrap().per_consumer_descriptor_base,
        Some(31000)
    );
    // And the example shipped with the crate.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/driver.toml");
    DriverConfig::load(&shipped).unwrap();
}

/// What distinguishes the camera example (a base directory of its own, no default profile,
/// no dynamic streams, announces on the control stream) and the announce-separate one (its
/// own announce stream), each on top of what every example shares.
#[test]
fn the_camera_and_announce_separate_shapes_of_the_c_examples_load_too() {
    let shared = |driver: &str, shm: &str, policies: &str, rest: &str| {
        format!(
            "[driver]\ninstance_id = \"x\"\ncontrol_channel = \"aeron:ipc?term-length=4m\"\n\
             control_stream_id = 1000\nqos_stream_id = 1200\nstream_id_range = \"20000-29999\"\n{driver}\n\
             [shm]\nnamespace = \"default\"\nrequire_hugepages = false\npage_size_bytes = 4096\n\
             permissions_mode = \"660\"\n{shm}\n\
             [policies]\nannounce_period_ms = 1000\nlease_keepalive_interval_ms = 1000\n\
             lease_expiry_grace_intervals = 3\n{policies}\n{rest}"
        )
    };
    let camera = shared(
        "announce_channel = \"aeron:ipc?term-length=4m\"\nannounce_stream_id = 1000",
        "base_dir = \"/dev/shm/tensorpool\"\nallowed_base_dirs = [\"/dev/shm/tensorpool\"]",
        "allow_dynamic_streams = false\nprefault_shm = true\nmlock_shm = false\nepoch_gc_enabled = true\n\
         epoch_gc_keep = 2\nepoch_gc_min_age_ns = 3000000000\nshutdown_timeout_ms = 2000",
        "[profiles.default]\nheader_nslots = 1024\n[[profiles.default.payload_pools]]\npool_id = 1\n\
         stride_bytes = 8388608\n[streams.camera]\nstream_id = 2001\nprofile = \"default\"\n",
    );
    let c = parse(&camera, &[]).unwrap();
    assert_eq!(c.shm.base_dir, "/dev/shm/tensorpool");
    assert_eq!(c.shm.allowed_base_dirs, vec!["/dev/shm/tensorpool".to_string()]);
    assert!(!c.policies.allow_dynamic_streams);
    assert_eq!(c.announce(), ("aeron:ipc?term-length=4m".to_string(), 1000));
    assert_eq!(c.streams["camera"].stream_id, 2001);
    assert_eq!(c.profiles["default"].payload_pools[0].stride_bytes, 8_388_608);
    let separate = shared(
        "announce_channel = \"aeron:ipc?term-length=4m\"\nannounce_stream_id = 1002",
        "base_dir = \"/dev/shm\"\nallowed_base_dirs = [\"/dev/shm\"]",
        "allow_dynamic_streams = false\ndefault_profile = \"camera\"\nnode_id_reuse_cooldown_ms = 1000",
        "[profiles.camera]\nheader_nslots = 64\npayload_pools = [ { pool_id = 1, stride_bytes = 1048576 } ]\n\
         [streams.cam1]\nstream_id = 10001\nprofile = \"camera\"\n",
    );
    let c = parse(&separate, &[]).unwrap();
    assert_eq!(c.announce(), ("aeron:ipc?term-length=4m".to_string(), 1002));
    assert_eq!(c.streams["cam1"].stream_id, 10001);
    assert_eq!(c.policies.default_profile, "camera");
}

#[test]
fn defaults_are_tensor_pool_c_s() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.driver.instance_id, "driver-01");
    assert_eq!(c.driver.control_channel, "aeron:ipc?term-length=4m");
    assert_eq!(
        c.announce(),
        ("aeron:ipc?term-length=4m".to_string(), 1000),
        "announce defaults to control"
    );
    assert_eq!(c.driver.qos_stream_id, 1200);
    assert_eq!(c.shm.allowed_base_dirs, vec!["/dev/shm".to_string()]);
    assert_eq!(c.policies.announce_period_ms, 1000);
    assert_eq!(
        c.policies.epoch_gc_min_age_ns,
        Some(3_000_000_000),
        "3 × announce period"
    );
    assert_eq!(c.lease_lifetime(), std::time::Duration::from_secs(3));
    assert_eq!(c.mode(), 0o660);
}

#[test]
fn the_environment_wins_over_the_file() {
    let c = parse(
        C_SHAPED,
        &[
            ("DRIVER_CONTROL_STREAM_ID", "1100"),
            ("POLICIES_ALLOW_DYNAMIC_STREAMS", "false"),
            ("SHM_ALLOWED_BASE_DIRS", "/dev/shm,/tmp"),
            ("PROFILES_CAMERA_HEADER_NSLOTS", "128"),
            ("POLICIES_SHUTDOWN_TOKEN", "t0k3n"),
        ],
    )
    .unwrap();
    assert_eq!(c.driver.control_stream_id, 1100);
    assert!(!c.policies.allow_dynamic_streams);
    assert_eq!(c.shm.allowed_base_dirs, vec!["/dev/shm", "/tmp"]);
    assert_eq!(c.profiles["camera"].header_nslots, 128);
    assert_eq!(c.policies.shutdown_token, "t0k3n");
    // A key the file leaves out can be set too.
    let c = parse("", &[("DRIVER_ANNOUNCE_STREAM_ID", "1001")]).unwrap();
    assert_eq!(c.announce().1, 1001);
    // A bad value in the environment names the variable.
    let e = parse(C_SHAPED, &[("POLICIES_ANNOUNCE_PERIOD_MS", "soon")]).unwrap_err();
    assert!(
        e.contains("POLICIES_ANNOUNCE_PERIOD_MS") && e.contains("soon"),
        "{e}"
    );
}

#[test]
fn bad_keys_and_values_are_refused_in_one_line_naming_them() {
    let cases: [(&str, &str); 9] = [
        ("[policies]\nannounce_period_msec = 5\n", "announce_period_msec"),
        ("[driver]\ncontrol_stream_id = \"x\"\n", "line 2"),
        (
            "[driver]\nstream_id_range = \"20000\"\n",
            "driver.stream_id_range",
        ),
        (
            "[driver]\nstream_id_range = \"20000-29999\"\ndescriptor_stream_id_range = \"29000-31000\"\n",
            "overlaps driver.stream_id_range",
        ),
        (
            "[driver]\nstream_id_range = \"900-1100\"\n",
            "holds driver.control_stream_id",
        ),
        ("[profiles.p]\nheader_nslots = 100\n", "profiles.p.header_nslots"),
        (
            "[profiles.p]\npayload_pools = [{ pool_id = 1, stride_bytes = 100 }]\n",
            "multiple of 64",
        ),
        (
            "[streams.s]\nstream_id = 5\nprofile = \"nope\"\n",
            "streams.s.profile",
        ),
        ("[shm]\npermissions_mode = \"rw\"\n", "shm.permissions_mode"),
    ];
    for (text, needle) in cases {
        let e = parse(text, &[]).unwrap_err();
        assert_eq!(e.lines().count(), 1, "{e:?}");
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    let e = parse("[policies]\nallow_dynamic_streams = true\n", &[]).unwrap_err();
    assert!(e.contains("policies.default_profile"), "{e}");
}

#[test]
fn print_config_shows_the_effective_configuration_and_reads_back_the_same() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/driver.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_xmem-tp-driver"))
        .arg(&path)
        .arg("--print-config")
        .env("POLICIES_EPOCH_GC_KEEP", "5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("epoch_gc_keep = 5"), "{printed}");
    assert!(
        printed.contains("epoch_gc_min_age_ns = 3000000000"),
        "defaults are shown: {printed}"
    );
    let again = parse(&printed, &[]).unwrap();
    let original = DriverConfig::parse(&std::fs::read_to_string(&path).unwrap(), "f", |k| {
        (k == "POLICIES_EPOCH_GC_KEEP").then(|| "5".to_string())
    })
    .unwrap();
    assert_eq!(again, original);
    // A bad file: exit 1, one line.
    let bad = std::env::temp_dir().join(format!("xmem-tpd-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[policies]\nnope = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xmem-tp-driver"))
        .arg(&bad)
        .output()
        .unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope"), "{err}");
}
