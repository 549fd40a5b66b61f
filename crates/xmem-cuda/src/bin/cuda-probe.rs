//! Reports what this machine's CUDA driver and devices offer xmem's device pools: the driver
//! version, each device's UUID, virtual-memory and POSIX-descriptor support, granularity and
//! free memory, and whether an exported descriptor imports back. Never fails on a missing GPU:
//! it says so and exits 0.

use xmem_cuda::{sys, uuid_text, Device, Driver};

fn main() {
    let driver = match Driver::get() {
        Ok(d) => d,
        Err(e) => {
            println!("cuda-probe: {e}");
            return;
        }
    };
    println!("driver CUDA version {:?}", driver.version());
    let n = driver.device_count().unwrap_or(0);
    println!("{n} device(s)");
    for ordinal in 0..n {
        match Device::open(ordinal) {
            Err(e) => println!("device {ordinal}: {e}"),
            Ok(device) => {
                let device = std::sync::Arc::new(device);
                println!(
                    "device {ordinal}: GPU-{} vmm={:?} posix_fd={:?} granularity={:?} memory(free,total)={:?}",
                    uuid_text(&device.uuid()),
                    device.attribute(sys::ATTR_VMM_SUPPORTED),
                    device.attribute(sys::ATTR_POSIX_FD_SUPPORTED),
                    device.granularity(),
                    device.memory_info()
                );
                let g = device.granularity().unwrap_or(2 << 20);
                match device
                    .allocate_exportable(g)
                    .and_then(|fd| device.import(&fd, g, false).map(|m| (fd, m)))
                {
                    Ok((fd, map)) => {
                        let ok = map.fill(0, g, 0x5a).and_then(|()| {
                            let mut b = [0u8; 16];
                            map.copy_to_host(g - 16, &mut b).map(|()| b == [0x5a; 16])
                        });
                        println!("  allocate, export, import, map, fill, copy back: {ok:?}");
                        // A reader's mapping: does the driver grant PROT_READ on an import?
                        match device.import(&fd, g, true) {
                            Ok(ro) => {
                                println!("  read-only import granted by the driver: {}", ro.read_only())
                            }
                            Err(e) => println!("  read-only import: {e}"),
                        }
                    }
                    Err(e) => println!("  allocate/export/import: {e}"),
                }
            }
        }
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    println!("yama ptrace_scope: {}", scope.trim());
}
