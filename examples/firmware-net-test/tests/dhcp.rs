//! The network firmware with `--features dhcp` under QEMU: it takes its address from QEMU's
//! DHCP server and serves there. QEMU is told to hand out 10.0.2.20 (`UPCASE_NET_GUEST`, which
//! also points the forwards there), where the static image (10.0.2.15) cannot be reached: the
//! static image, booted the same way, is the control that shows the lease made the difference.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::time::Duration;

use upcase_firmware_net_test::{Guest, build_image, can_spoof, recv_within, spoof};
use upcase_model::upper;

/// Not QEMU's default first lease (10.0.2.15, the static address), so only a lease reaches it.
const LEASED: &str = "10.0.2.20";

fn udp_client(guest: &Guest) -> UdpSocket {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.connect(guest.udp_addr()).unwrap();
    u
}

#[test]
fn serves_on_the_address_of_its_dhcp_lease() {
    let image = build_image("dhcp", &["dhcp"]);
    let mut guest = Guest::boot(&image, &[("UPCASE_NET_GUEST", LEASED)]);
    let serving = guest.line("upcase-firmware-net: serving");
    assert!(
        serving.contains(&format!("serving tcp {LEASED}:65432 "))
            && serving.contains(&format!(" udp {LEASED}:9876 "))
            && serving.ends_with(" address=dhcp"),
        "{serving}"
    );

    let mut s = guest.connect();
    s.write_all(b"leased\nstra\xc3\x9fe").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, upper(b"leased\nstra\xc3\x9fe"));

    let u = udp_client(&guest);
    u.send(b"over udp").unwrap();
    let reply = recv_within(&u, Duration::from_secs(5)).map(|(r, _)| r);
    assert_eq!(reply.as_deref(), Some(&b"OVER UDP"[..]));

    // The loop guard knows the leased address as the image's own.
    if can_spoof() {
        let before = guest.totals();
        spoof(
            format!("{LEASED}:9876").parse::<SocketAddr>().unwrap(),
            guest.udp_addr(),
            b"from myself",
        );
        u.send(b"after").unwrap();
        assert!(recv_within(&u, Duration::from_secs(5)).is_some());
        let after = guest.totals();
        assert_eq!(after["own_address"] - before["own_address"], 1);
    }
    let log = guest.log();
    assert!(!log.contains("lease lost"), "{log}");
}

/// The control: the static image, booted with the same network, is not reached at the leased
/// address (its ready line still comes: it does not know where QEMU forwards).
#[test]
fn the_static_image_is_not_reached_there() {
    let image = build_image("", &[]);
    let mut guest = Guest::boot(&image, &[("UPCASE_NET_GUEST", LEASED)]);
    let serving = guest.line("upcase-firmware-net: serving");
    assert!(
        serving.contains("serving tcp 10.0.2.15:65432 "),
        "{serving}"
    );
    let u = udp_client(&guest);
    u.send(b"anyone there").unwrap();
    assert_eq!(recv_within(&u, Duration::from_secs(2)), None);
}
