//! Diagnostic lines without `core::fmt`, which would cost flash for a few numbers.

use core::net::Ipv4Addr;

/// A line being built, byte by byte. An image implements [`byte`](Self::byte) (where the bytes
/// go: a buffer cut at its end, or one flushed to the host when full) and gets the rest.
pub trait Line {
    /// Appends one byte.
    fn byte(&mut self, b: u8);

    /// Appends text.
    fn text(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            self.byte(b);
        }
        self
    }

    /// Appends a number in decimal.
    fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        while i > 0 {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in digits.get(i..).unwrap_or_default() {
            self.byte(d);
        }
        self
    }

    /// Appends `name=value`, with a leading space.
    fn field(&mut self, name: &str, value: u64) -> &mut Self {
        self.text(" ").text(name).text("=").num(value)
    }

    /// Appends an IPv4 address in dotted decimal.
    fn ipv4(&mut self, address: Ipv4Addr) -> &mut Self {
        for (i, octet) in address.octets().into_iter().enumerate() {
            if i > 0 {
                self.byte(b'.');
            }
            self.num(octet.into());
        }
        self
    }
}
