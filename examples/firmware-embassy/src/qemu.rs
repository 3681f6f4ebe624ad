//! The QEMU board: an LM3S6965 on QEMU's user network (`-nic user,model=stellaris`), whose
//! DHCP server hands out 10.0.2.15 and whose gateway is 10.0.2.2.
//!
//! Boot: the Stellaris MAC, the embassy-net stack on it, the tickless time driver, then
//! the executor with the stack's runner and the application's tasks (`app::spawn`).

use core::net::Ipv4Addr;

use cortex_m_rt::entry;
use embassy_net::{Config, Ipv4Cidr, Runner, Stack, StackResources};
use static_cell::{ConstStaticCell, StaticCell};

use crate::app;
use crate::hw::{self, qemu as board};
use crate::mac::StellarisMac;
use lm3s6965::{FIFO_FRAME, FRAME};

/// The guest's static address on QEMU's user network (the address its DHCP server hands out).
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// QEMU's user-network gateway (and the source of every forwarded connection).
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// The address: static by default, by DHCP with feature `dhcp`.
fn net_config() -> Config {
    if cfg!(feature = "dhcp") {
        #[cfg(feature = "dhcp")]
        return Config::dhcpv4(Default::default());
    }
    Config::ipv4_static(embassy_net::StaticConfigV4 {
        address: Ipv4Cidr::new(ADDRESS, 24),
        gateway: Some(GATEWAY),
        dns_servers: heapless::Vec::new(),
    })
}

/// Runs the network stack: moves frames between the MAC and the sockets, for ever.
#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, StellarisMac>) -> ! {
    runner.run().await
}

#[entry]
fn main() -> ! {
    lm3s6965::paint_stack();
    let Some(core) = cortex_m::Peripherals::take() else {
        board::halt(false)
    };
    let (stack, runner, seed) = bring_up_network();
    board::start_time(core.SYST);
    board::unmask_ethernet_irq();
    hw::run(|spawner| {
        spawner.spawn(net_task(runner).unwrap_or_else(|_| board::halt(false)));
        // QEMU has no entropy source: the loop guard's key is derived from the same seed.
        let key = u128::from(seed) << 64 | u128::from(seed.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15);
        if app::spawn(spawner, stack, key).is_err() {
            board::halt(false)
        }
    })
}

/// The MAC and the stack on it, and the seed it was given. A function of its own, never
/// inlined: building the interface takes about 2.3 KB of stack, which is given back before the
/// executor runs for ever.
#[inline(never)]
fn bring_up_network() -> (Stack<'static>, Runner<'static, StellarisMac>, u64) {
    static FRAME_RX: ConstStaticCell<[u8; FIFO_FRAME]> = ConstStaticCell::new([0; FIFO_FRAME]);
    static FRAME_TX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);
    let mac = StellarisMac::new(FRAME_RX.take(), FRAME_TX.take());
    // No entropy source on this chip: the MAC address at least differs between boards. (Not a
    // secret: on a real LM3S6965 take entropy from the ADC's noise instead.)
    let seed = mac
        .address()
        .iter()
        .fold(0x5DEE_CE66_D1CE_4E5B, |h: u64, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
    static RESOURCES: StaticCell<StackResources<{ app::STACK_SOCKETS }>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        mac,
        net_config(),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    (stack, runner, seed)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::halt(false)
}
