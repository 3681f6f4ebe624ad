//! The NUCLEO-F429ZI board: an STM32F429ZI at 168 MHz, its Ethernet MAC in RMII mode wired to
//! the on-board LAN8742A PHY, through embassy-stm32's Ethernet driver and time driver.
//! Diagnostics are defmt over RTT, panics go to panic-probe: nothing here needs semihosting,
//! so the board runs with or without a debugger attached.
//!
//! Boot: clocks (8 MHz HSE from the ST-LINK's MCO, PLL to 168 MHz, 48 MHz for the RNG), a seed
//! from the RNG, the Ethernet driver on the board's RMII pins, the embassy-net stack, then the
//! executor with the stack's runner and the application's tasks (`app::spawn`).

use core::net::Ipv4Addr;

use cortex_m_rt::entry;
use embassy_net::{Config, Ipv4Cidr, Runner, Stack, StackResources};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rcc;
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::app;
use crate::hw::{self, nucleo::Irqs};

/// The static address, used without feature `dhcp`: change it (and [`PREFIX`], [`GATEWAY`])
/// to a free address of your LAN, or build with `--features dhcp`.
const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
/// The LAN's prefix length.
const PREFIX: u8 = 24;
/// The LAN's gateway.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

/// The Ethernet driver as embassy-net sees it.
type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The address: static by default, by DHCP with feature `dhcp`.
fn net_config() -> Config {
    if cfg!(feature = "dhcp") {
        #[cfg(feature = "dhcp")]
        return Config::dhcpv4(Default::default());
    }
    Config::ipv4_static(embassy_net::StaticConfigV4 {
        address: Ipv4Cidr::new(ADDRESS, PREFIX),
        gateway: Some(GATEWAY),
        dns_servers: heapless::Vec::new(),
    })
}

/// The clock tree: HSE 8 MHz (bypass: the ST-LINK drives it), PLL to a 168 MHz system clock
/// (P) and 48 MHz (Q) for the RNG; APB1 at 42 MHz, APB2 at 84 MHz. The Ethernet MAC needs
/// HCLK of at least 25 MHz.
fn clocks() -> embassy_stm32::Config {
    let mut config = embassy_stm32::Config::default();
    config.rcc.hse = Some(rcc::Hse {
        freq: Hertz(8_000_000),
        mode: rcc::HseMode::Bypass,
    });
    config.rcc.pll_src = rcc::PllSource::HSE;
    config.rcc.pll = Some(rcc::Pll {
        prediv: rcc::PllPreDiv::DIV4,
        mul: rcc::PllMul::MUL168,
        divp: Some(rcc::PllPDiv::DIV2),
        divq: Some(rcc::PllQDiv::DIV7),
        divr: None,
    });
    config.rcc.ahb_pre = rcc::AHBPrescaler::DIV1;
    config.rcc.apb1_pre = rcc::APBPrescaler::DIV4;
    config.rcc.apb2_pre = rcc::APBPrescaler::DIV2;
    config.rcc.sys = rcc::Sysclk::PLL1_P;
    config
}

/// Runs the network stack: moves frames between the MAC and the sockets, for ever.
#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}

#[entry]
fn main() -> ! {
    lm3s6965::paint_stack();
    let (stack, runner, key) = bring_up_network();
    hw::run(|spawner| match net_task(runner) {
        Ok(token) => {
            spawner.spawn(token);
            if app::spawn(spawner, stack, key).is_err() {
                defmt::panic!("the task pools are already taken");
            }
        }
        Err(_) => defmt::panic!("the network task is already running"),
    })
}

/// The clocks, the Ethernet driver and the stack on it, and a random key for the UDP loop
/// guard. A function of its own, never inlined: what it builds on the stack is given back
/// before the executor runs for ever.
#[inline(never)]
fn bring_up_network() -> (Stack<'static>, Runner<'static, Device>, u128) {
    let p = embassy_stm32::init(clocks());
    let mut rng = Rng::new(p.RNG, Irqs);
    let seed = rng.next_u64();
    let key = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
    // No MAC address is programmed on this board: a locally administered one (first byte 0x02)
    // from the chip's unique ID, the same on every boot of the same chip.
    let uid = embassy_stm32::uid::uid();
    let mac_address = [0x02, uid[0], uid[2], uid[4], uid[6], uid[8] ^ uid[10]];
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    // The NUCLEO-F429ZI's RMII wiring (user manual UM1974, "Ethernet"): REF_CLK PA1, CRS_DV PA7,
    // RXD0 PC4, RXD1 PC5, TXD0 PG13, TXD1 PB13, TX_EN PG11; MDIO PA2, MDC PC1.
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        mac_address,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    defmt::info!(
        "{=str}: starting, mac {=[u8]:02x}",
        crate::NAME,
        mac_address
    );
    static RESOURCES: StaticCell<StackResources<{ app::STACK_SOCKETS }>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        net_config(),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    (stack, runner, key)
}
