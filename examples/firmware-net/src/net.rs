//! The interface's address: fixed at boot (10.0.2.15/24 and the gateway 10.0.2.2), or with the
//! feature `dhcp`, from smoltcp's DHCP socket, which follows the lease (renewal, loss).

use core::net::Ipv4Addr;

#[cfg(feature = "dhcp")]
use smoltcp::iface::SocketHandle;
use smoltcp::iface::{Interface, SocketSet};

use crate::diag::Via;

#[cfg(feature = "dhcp")]
pub use dhcp::Net;
#[cfg(not(feature = "dhcp"))]
pub use fixed::Net;

#[cfg(not(feature = "dhcp"))]
mod fixed {
    use super::*;
    use smoltcp::wire::IpCidr;

    /// The guest's address on QEMU's user network (without `dhcp`).
    pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    /// QEMU's user-network gateway (and the source of every forwarded connection).
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    pub struct Net {
        /// The address the image serves on.
        pub address: Ipv4Addr,
        announced: bool,
    }

    impl Net {
        /// Sets the fixed address and the default route.
        pub fn new(iface: &mut Interface, _: &mut SocketSet<'_>) -> Self {
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::new(ADDRESS.into(), 24));
            });
            let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY);
            Self {
                address: ADDRESS,
                announced: false,
            }
        }

        /// `Some(Some(via))` once: the address is set.
        pub fn update(&mut self, _: &mut Interface, _: &mut SocketSet<'_>) -> Option<Option<Via>> {
            (!core::mem::replace(&mut self.announced, true)).then_some(Some(Via::Static))
        }
    }
}

#[cfg(feature = "dhcp")]
mod dhcp {
    use super::*;
    use smoltcp::socket::dhcpv4;
    use smoltcp::wire::IpCidr;

    pub struct Net {
        /// The address the image serves on (unspecified until the first lease).
        pub address: Ipv4Addr,
        handle: SocketHandle,
    }

    impl Net {
        /// Adds the DHCP socket; no address until a lease arrives.
        pub fn new(_: &mut Interface, sockets: &mut SocketSet<'_>) -> Self {
            Self {
                address: Ipv4Addr::UNSPECIFIED,
                handle: sockets.add(dhcpv4::Socket::new()),
            }
        }

        /// Applies a new lease (`Some(Some(Dhcp))`) or its loss (`Some(None)`).
        pub fn update(
            &mut self,
            iface: &mut Interface,
            sockets: &mut SocketSet<'_>,
        ) -> Option<Option<Via>> {
            match sockets.get_mut::<dhcpv4::Socket>(self.handle).poll()? {
                dhcpv4::Event::Configured(config) => {
                    let cidr = config.address;
                    iface.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(cidr));
                    });
                    iface.routes_mut().remove_default_ipv4_route();
                    if let Some(router) = config.router {
                        let _ = iface.routes_mut().add_default_ipv4_route(router);
                    }
                    self.address = cidr.address();
                    Some(Some(Via::Dhcp))
                }
                // The socket starts deconfigured, and says so once: nothing was lost yet.
                dhcpv4::Event::Deconfigured if self.address.is_unspecified() => None,
                dhcpv4::Event::Deconfigured => {
                    iface.update_ip_addrs(|addrs| addrs.clear());
                    iface.routes_mut().remove_default_ipv4_route();
                    self.address = Ipv4Addr::UNSPECIFIED;
                    Some(None)
                }
            }
        }
    }
}
