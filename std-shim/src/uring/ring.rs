//! Every `unsafe` of the io_uring driver: the ring, and the operations that hand the kernel a
//! buffer or a descriptor.
//!
//! The contract of io_uring is that a buffer given with an operation stays valid, and is not
//! touched by us, until the operation's completion has been reaped. This module keeps it by
//! ownership: [`Ring::push`] takes the buffer ([`Buf`]) into the ring's table of operations in
//! flight, and only [`Ring::reap`] gives it back, with the completion. Nothing outside this
//! module can reach a buffer the kernel may write. Dropping the ring cancels every operation
//! still in flight and waits (at most [`DROP_WAIT`]) for their completions; should some not come,
//! their buffers are leaked, never freed under the kernel.
//!
//! Descriptors: an operation names its socket by number. The driver closes a socket only once
//! none of its operations is in flight or queued, so a number is never reused under one.

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};
use std::alloc::Layout;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// How long dropping a ring waits for the completions of the operations it cancelled.
const DROP_WAIT: Duration = Duration::from_secs(2);
/// `user_data` of cancel requests, whose own completions carry nothing.
const CANCEL: u64 = u64::MAX;
/// The pool's buffer group id.
const POOL_GROUP: u16 = 0;

/// Room for a UDP request: one byte more than any payload, so a truncated one is recognised.
pub(crate) const DATAGRAM_ROOM: usize = 65536;

/// Why io_uring cannot serve here.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// No ring could be set up: no io_uring in the kernel, `kernel.io_uring_disabled`, or a
    /// seccomp filter.
    Setup(io::Error),
    /// The kernel cannot tell which operations it supports (before 5.6).
    Probe(io::Error),
    /// The kernel lacks the wait with a timeout (`IORING_FEAT_EXT_ARG`, 5.11).
    NoExtArg,
    /// The kernel lacks this operation.
    Missing(&'static str),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setup(e) => write!(f, "cannot set up a ring: {e}"),
            Self::Probe(e) => write!(f, "cannot probe the ring's operations: {e}"),
            Self::NoExtArg => f.write_str("the kernel lacks the wait with a timeout (5.11)"),
            Self::Missing(op) => write!(f, "the kernel lacks the {op} operation"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Sets up a small ring and checks every operation and feature the driver uses.
pub(crate) fn probe() -> Result<(), ProbeError> {
    if cfg!(feature = "_uring-unavailable") {
        // What `io_uring_setup` returns under `kernel.io_uring_disabled=2`.
        return Err(ProbeError::Setup(io::Error::from_raw_os_error(libc::EPERM)));
    }
    let ring = IoUring::new(8).map_err(ProbeError::Setup)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(ProbeError::NoExtArg);
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(ProbeError::Probe)?;
    let needed = [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::Send::CODE, "SEND"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(ProbeError::Missing(name));
        }
    }
    Ok(())
}

/// Receives what has already arrived on `sock` into `buf`, without waiting: `recv(2)` with
/// `MSG_DONTWAIT` (the socket itself stays blocking, as the ring wants it). `Ok(0)` is the
/// peer's end of stream (or an empty `buf`); `WouldBlock` means nothing has arrived. Call it
/// only while no receive operation is in flight on `sock`, or the bytes could arrive out of
/// order.
pub(crate) fn recv_now(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, the kernel
    // writes at most that many, and initialised bytes stay initialised whatever it writes.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One UDP request and its reply, with the message header the kernel reads or fills. Boxed, so
/// the header's pointers to its own fields stay valid while the box moves between owners.
pub(crate) struct Datagram {
    request: Box<[u8]>,
    reply: Box<[u8]>,
    /// Request bytes received.
    received: usize,
    /// Reply bytes to send.
    reply_len: usize,
    name: socket2::SockAddrStorage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

// SAFETY: the raw pointers in `iov` and `hdr` point into this same boxed value and its own
// boxed buffers, which move with it; nothing is shared with another thread.
unsafe impl Send for Datagram {}

impl Datagram {
    /// A slot: a request buffer of [`DATAGRAM_ROOM`] bytes and a reply buffer of `reply_room`.
    pub(crate) fn new(reply_room: usize) -> Box<Self> {
        Box::new(Self {
            request: vec![0u8; DATAGRAM_ROOM].into_boxed_slice(),
            reply: vec![0u8; reply_room].into_boxed_slice(),
            received: 0,
            reply_len: 0,
            name: socket2::SockAddrStorage::zeroed(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: all-zero bytes are a valid `msghdr` (a C struct of integers and raw
            // pointers; its null pointers are replaced before the kernel sees it).
            hdr: unsafe { std::mem::zeroed() },
        })
    }

    /// The request received, and the reply buffer to write its answer into.
    pub(crate) fn parts(&mut self) -> (&[u8], &mut [u8]) {
        (&self.request[..self.received], &mut self.reply[..])
    }

    /// Where the request came from: `None` for a source that is not IP.
    pub(crate) fn source(&self) -> Option<SocketAddr> {
        let len = self.hdr.msg_namelen.min(self.name.size_of());
        // SAFETY: `SockAddrStorage` is plain bytes (no `Drop`, no references), so a bitwise
        // copy is a valid value; the kernel filled its first `len` bytes with the source
        // address, and `len` is within its size, as `SockAddr::new` requires.
        let addr = unsafe { socket2::SockAddr::new(std::ptr::read(&raw const self.name), len) };
        addr.as_socket()
    }

    /// Fills the header to receive into the request buffer.
    fn prepare_recv(&mut self) -> *mut libc::msghdr {
        self.received = 0;
        self.iov = libc::iovec {
            iov_base: self.request.as_mut_ptr().cast(),
            iov_len: self.request.len(),
        };
        self.hdr.msg_name = (&raw mut self.name).cast();
        self.hdr.msg_namelen = self.name.size_of();
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = std::ptr::null_mut();
        self.hdr.msg_controllen = 0;
        self.hdr.msg_flags = 0;
        &raw mut self.hdr
    }

    /// Fills the header to send `reply[..len]` to `to`.
    fn prepare_send(&mut self, len: usize, to: SocketAddr) -> *const libc::msghdr {
        self.reply_len = len.min(self.reply.len());
        let to = socket2::SockAddr::from(to);
        let name_len = to.len();
        self.name = to.as_storage();
        self.iov = libc::iovec {
            iov_base: self.reply.as_mut_ptr().cast(),
            iov_len: self.reply_len,
        };
        self.hdr.msg_name = (&raw mut self.name).cast();
        self.hdr.msg_namelen = name_len;
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = std::ptr::null_mut();
        self.hdr.msg_controllen = 0;
        self.hdr.msg_flags = 0;
        &raw const self.hdr
    }
}

/// An operation to start. Each buffer is the ring's until the operation completes.
pub(crate) enum Op {
    /// Accept a connection on listening socket `fd`.
    Accept { fd: RawFd },
    /// Accept connections on listening socket `fd` until it fails or is cancelled: one
    /// completion per connection, each with [`Done::more`] set but the last (5.19; an older
    /// kernel fails it at once with `EINVAL`).
    AcceptMulti { fd: RawFd },
    /// Receive into the spare capacity of `buf` (`buf.len()..buf.capacity()`); the bytes
    /// received are appended.
    Recv { fd: RawFd, buf: Vec<u8> },
    /// Send `buf`.
    Send { fd: RawFd, buf: Vec<u8> },
    /// Receive into a buffer of the ring's pool, which the kernel picks only when bytes
    /// arrive, so a receive that waits holds no memory; the bytes come back in a `Vec` of
    /// [`Ring::pool_buffer`] capacity. Only where [`Ring::pool_buffer`] is `Some`.
    RecvPooled { fd: RawFd },
    /// Wait until socket `fd` has one of the `poll(2)` `events`; holds no buffer. The
    /// completion's result is the events that are set.
    Poll { fd: RawFd, events: u32 },
    /// Receive one datagram into `dg`'s request buffer.
    RecvMsg { fd: RawFd, dg: Box<Datagram> },
    /// Send `dg`'s reply buffer, `len` bytes of it, to `to`.
    SendMsg {
        fd: RawFd,
        dg: Box<Datagram>,
        len: usize,
        to: SocketAddr,
    },
}

/// What comes back with a completion.
pub(crate) enum Buf {
    /// An accept: the connection accepted, if it succeeded.
    Accepted(Option<TcpStream>),
    /// A receive's buffer, with the bytes received appended.
    Recv(Vec<u8>),
    /// A send's buffer.
    Send(Vec<u8>),
    /// A poll: no buffer.
    Polled,
    /// A datagram slot: received into (`RecvMsg`) or sent from (`SendMsg`).
    Datagram(Box<Datagram>),
}

/// An operation's id: its slot in the table and the slot's generation, so that an id outlives
/// its operation harmlessly (a late cancel of a finished operation finds nothing, never the
/// operation that reuses its slot). It is also the operation's `user_data`.
pub(crate) type OpId = u64;

/// One completion.
pub(crate) struct Done {
    /// The tag the operation was pushed with.
    pub(crate) tag: u64,
    /// The operation's id, as [`Ring::push`] returned it.
    pub(crate) id: OpId,
    /// Bytes moved (or 0 for an accept), or the error.
    pub(crate) result: io::Result<usize>,
    /// The buffer, given back.
    pub(crate) buf: Buf,
    /// The operation goes on (a multishot accept): more completions will come with this id.
    pub(crate) more: bool,
}

/// An operation in flight: its tag and the buffer the kernel may use.
struct InFlight {
    id: OpId,
    tag: u64,
    buf: Held,
}

/// A buffer while the kernel may use it.
enum Held {
    Accept,
    Recv(Vec<u8>),
    Pooled,
    Send(Vec<u8>),
    Poll,
    Datagram(Box<Datagram>),
}

/// The slot of operation `id` in `ops`, if it is still in flight.
fn slot_of(ops: &[Option<InFlight>], id: OpId) -> Option<usize> {
    let slot = (id & u64::from(u32::MAX)) as usize;
    ops.get(slot)?
        .as_ref()
        .filter(|op| op.id == id)
        .map(|_| slot)
}

/// A ring and the operations in flight on it.
pub(crate) struct Ring {
    ring: IoUring,
    ops: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// The generation of each slot: bumped by every operation that takes it.
    gens: Vec<u32>,
    live: usize,
    /// The receive pool, where the kernel has provided buffer rings (5.19).
    pool: Option<Pool>,
    /// Completions reaped early, to make room in a full completion queue while pushing: the
    /// next [`reap`](Ring::reap) hands them out first.
    stash: Vec<Done>,
}

/// A provided buffer ring: `count` buffers of `size` bytes, which the kernel takes
/// one at a time for [`Op::RecvPooled`] receives as their bytes arrive, and which [`Ring::reap`]
/// gives back as soon as it has copied the bytes out. So the pool is never held by a
/// connection, and a receive that fails for want of a buffer (`ENOBUFS`, many receiving in one
/// turn) finds the pool refilled when it is armed again. It has no `Drop`: only
/// [`free`](Pool::free) gives its memory back, so a pool simply dropped is leaked, never freed
/// under the kernel.
struct Pool {
    /// The ring of entries that name the buffers, shared with the kernel: page-aligned,
    /// `count` entries of 16 bytes, its tail in the first entry.
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    /// The buffers, buffer `bid` at `bid * size`. Only raw pointers reach it: the kernel may
    /// write any buffer it holds at any time.
    mem: NonNull<u8>,
    mem_layout: Layout,
    size: usize,
    /// Buffers and entries: a power of two, at most 32,768.
    count: u16,
    /// The tail as we have advanced it (the kernel's head follows it).
    tail: u16,
}

// SAFETY: the pool's memory is owned by its ring and reached only through it; nothing is
// shared with another thread.
unsafe impl Send for Pool {}

impl Pool {
    /// Allocates the pool and registers it with `ring`: `None` where the kernel has no
    /// provided buffer rings, or memory is short.
    fn new(ring: &IoUring, count: u16, size: usize) -> Option<Self> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 {
            return None;
        }
        let n = usize::from(count);
        // The kernel wants the ring page-aligned (4 KiB, or 16 or 64 KiB on some arm64 and
        // ppc64 kernels).
        // SAFETY: `sysconf` only reads the system's configuration.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let entries_layout = Layout::from_size_align(n * size_of::<BufRingEntry>(), page).ok()?;
        let mem_layout = Layout::from_size_align(n * size, 64).ok()?;
        // SAFETY: both layouts have a non-zero size (`count` and `size` are at least 1).
        let entries = NonNull::new(unsafe { std::alloc::alloc_zeroed(entries_layout) })?;
        // SAFETY: as above.
        let Some(mem) = NonNull::new(unsafe { std::alloc::alloc(mem_layout) }) else {
            // SAFETY: allocated above with this layout, and not registered.
            unsafe { std::alloc::dealloc(entries.as_ptr(), entries_layout) };
            return None;
        };
        let mut pool = Self {
            entries: entries.cast(),
            entries_layout,
            mem,
            mem_layout,
            size,
            count,
            tail: 0,
        };
        // SAFETY: the entries are page-aligned memory of `count` entries, which stays
        // allocated until the group is unregistered (`Ring::drop`), or forever if that fails.
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.entries.as_ptr() as u64,
                count,
                POOL_GROUP,
                0,
            )
        };
        if registered.is_err() {
            // SAFETY: allocated above with these layouts; the kernel never saw them.
            unsafe {
                std::alloc::dealloc(pool.entries.as_ptr().cast(), entries_layout);
                std::alloc::dealloc(mem.as_ptr(), mem_layout);
            }
            return None;
        }
        for bid in 0..count {
            pool.provide(bid);
        }
        Some(pool)
    }

    /// Gives buffer `bid` to the kernel (again).
    fn provide(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: `tail & mask` is below `count`, so the entry is in the allocation;
        // the kernel reads only entries between its head and the published tail, and this one
        // is past the tail until the store below publishes it. Its buffer is `size` bytes at
        // `bid * size`, inside `mem`, and no longer ours: we hold no reference into it.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(usize::from(self.tail & mask));
            entry.set_addr(self.mem.as_ptr().add(usize::from(bid) * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the shared `u16` in the first entry's reserved field; a release
        // store publishes the entry written above before the kernel can read the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Copies the `n` bytes the kernel received into buffer `bid` into a new `Vec` of `size`
    /// capacity, and gives the buffer back.
    fn take(&mut self, bid: u16, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        if bid < self.count {
            let n = n.min(self.size);
            // SAFETY: the completion that named `bid` gave the buffer back to us, with its
            // first `n` bytes written; it is inside `mem`, and the kernel does not touch it
            // until `provide` hands it over again, after this copy.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.mem.as_ptr().add(usize::from(bid) * self.size), n)
            };
            out.extend_from_slice(bytes);
            self.provide(bid);
        }
        out
    }

    /// Frees the memory. Call only once the kernel no longer knows the pool.
    ///
    /// # Safety
    ///
    /// The group is unregistered (or the ring closed with nothing in flight).
    unsafe fn free(self) {
        // SAFETY: allocated in `new` with these layouts; the caller vouches the kernel is done.
        unsafe {
            std::alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            std::alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

impl Ring {
    /// A ring with `entries` submission entries (completion queue twice that), and a receive
    /// pool of `pool.0` buffers (a power of two, at most 32,768) of `pool.1` bytes where the
    /// kernel allows it.
    pub(crate) fn new(entries: u32, pool: (u16, usize)) -> io::Result<Self> {
        let ring = IoUring::builder().build(entries)?;
        let pool = Pool::new(&ring, pool.0, pool.1);
        if pool.is_none() {
            tracing::debug!("no provided buffer ring (5.19): a receive buffer per connection");
        }
        Ok(Self {
            ring,
            ops: Vec::new(),
            free: Vec::new(),
            gens: Vec::new(),
            live: 0,
            pool,
            stash: Vec::new(),
        })
    }

    /// The size of the receive pool's buffers: `None` without a pool (a kernel before 5.19),
    /// where [`Op::RecvPooled`] must not be used.
    pub(crate) fn pool_buffer(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.size)
    }

    /// Starts `op` (submitted with the next [`submit_and_wait`](Self::submit_and_wait)); its
    /// completion comes back with `tag`. Returns the operation's id, for [`cancel`](Self::cancel).
    pub(crate) fn push(&mut self, tag: u64, op: Op) -> OpId {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.ops.push(None);
            self.gens.push(0);
            self.ops.len() - 1
        });
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        let user_data = (u64::from(self.gens[slot]) << 32) | slot as u64;
        let (entry, held) = match op {
            Op::Accept { fd } => (
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build(),
                Held::Accept,
            ),
            Op::AcceptMulti { fd } => (
                opcode::AcceptMulti::new(types::Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build(),
                Held::Accept,
            ),
            Op::Recv { fd, mut buf } => {
                let spare = buf.spare_capacity_mut();
                let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                let entry =
                    opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr().cast(), len).build();
                (entry, Held::Recv(buf))
            }
            Op::RecvPooled { fd } => {
                let len = self.pool.as_ref().map_or(0, |p| p.size as u32);
                let entry = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), len)
                    .buf_group(POOL_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT);
                (entry, Held::Pooled)
            }
            Op::Send { fd, buf } => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                let entry = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
                (entry, Held::Send(buf))
            }
            Op::Poll { fd, events } => (
                opcode::PollAdd::new(types::Fd(fd), events).build(),
                Held::Poll,
            ),
            Op::RecvMsg { fd, mut dg } => {
                let hdr = dg.prepare_recv();
                (
                    opcode::RecvMsg::new(types::Fd(fd), hdr).build(),
                    Held::Datagram(dg),
                )
            }
            Op::SendMsg {
                fd,
                mut dg,
                len,
                to,
            } => {
                let hdr = dg.prepare_send(len, to);
                (
                    opcode::SendMsg::new(types::Fd(fd), hdr)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build(),
                    Held::Datagram(dg),
                )
            }
        };
        self.ops[slot] = Some(InFlight {
            id: user_data,
            tag,
            buf: held,
        });
        self.live += 1;
        self.push_entry(&entry.user_data(user_data));
        user_data
    }

    /// Asks the kernel to cancel operation `id`, if it is still in flight: its completion then
    /// comes (with `ECANCELED`, or its result if it finished first), and with it its buffer.
    pub(crate) fn cancel(&mut self, id: OpId) {
        if slot_of(&self.ops, id).is_some() {
            let entry = opcode::AsyncCancel::new(id).build().user_data(CANCEL);
            self.push_entry(&entry);
        }
    }

    fn push_entry(&mut self, entry: &io_uring::squeue::Entry) {
        loop {
            // SAFETY: every pointer in `entry` points into a buffer now held in `self.ops`
            // (moved there before this call, and heap memory that does not move with it),
            // which stays there until the completion of this entry is reaped in `reap`; a
            // cancel entry holds no pointer. The descriptors are the driver's open sockets.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    // The completion queue is full (completions the kernel holds back wait
                    // for room in it): make room by reaping into the stash.
                    let mut stash = std::mem::take(&mut self.stash);
                    self.reap_queue(&mut stash);
                    self.stash = stash;
                    std::thread::yield_now();
                } else if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "io_uring submit failed");
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Submits what was pushed and waits until at least `want` completions are ready or
    /// `timeout` has passed.
    pub(crate) fn submit_and_wait(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every completion ready into `out`, with its buffer.
    pub(crate) fn reap(&mut self, out: &mut Vec<Done>) {
        out.append(&mut self.stash);
        self.reap_queue(out);
    }

    /// Moves the completions in the completion queue into `out`.
    fn reap_queue(&mut self, out: &mut Vec<Done>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let user_data = cqe.user_data();
            if user_data == CANCEL {
                continue;
            }
            let id = user_data;
            let Some(slot) = slot_of(&self.ops, id) else {
                continue;
            };
            let res = cqe.result();
            let flags = cqe.flags();
            let more = io_uring::cqueue::more(flags);
            if more {
                // A multishot accept goes on: the completion carries a connection, and the
                // operation (which holds no buffer) stays in flight.
                let Some(Some(op)) = self.ops.get(slot) else {
                    continue;
                };
                let accepted = (res >= 0).then(|| {
                    // SAFETY: a successful accept's result is a new descriptor that nothing
                    // else owns; the stream takes it over and closes it when dropped.
                    unsafe { TcpStream::from_raw_fd(res) }
                });
                out.push(Done {
                    tag: op.tag,
                    id,
                    result: if res < 0 {
                        Err(io::Error::from_raw_os_error(-res))
                    } else {
                        Ok(0)
                    },
                    buf: Buf::Accepted(accepted),
                    more: true,
                });
                continue;
            }
            let Some(op) = self.ops.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            self.free.push(slot);
            self.live -= 1;
            let result = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            };
            let buf = match op.buf {
                Held::Accept => Buf::Accepted(match result {
                    Ok(_) => {
                        // SAFETY: a successful accept's result is a new descriptor that nothing
                        // else owns; the stream takes it over and closes it when dropped.
                        Some(unsafe { TcpStream::from_raw_fd(res) })
                    }
                    Err(_) => None,
                }),
                Held::Recv(mut buf) => {
                    if let Ok(n) = result {
                        let n = n.min(buf.capacity() - buf.len());
                        // SAFETY: the kernel wrote `n` bytes into the spare capacity from
                        // `len`, so `len + n` bytes are initialised, within the capacity.
                        unsafe { buf.set_len(buf.len() + n) };
                    }
                    Buf::Recv(buf)
                }
                Held::Pooled => Buf::Recv(match (cqueue::buffer_select(flags), &mut self.pool) {
                    (Some(bid), Some(pool)) => pool.take(bid, result.as_ref().map_or(0, |&n| n)),
                    _ => Vec::new(),
                }),
                Held::Send(buf) => Buf::Send(buf),
                Held::Poll => Buf::Polled,
                Held::Datagram(mut dg) => {
                    if let Ok(n) = result {
                        dg.received = n.min(dg.request.len());
                    }
                    Buf::Datagram(dg)
                }
            };
            out.push(Done {
                tag: op.tag,
                id,
                result,
                buf,
                more: false,
            });
        }
    }
}

impl Drop for Ring {
    /// Cancels every operation in flight and waits for the completions; what does not complete
    /// within [`DROP_WAIT`] keeps its buffer forever (leaked), as the kernel may still use it.
    fn drop(&mut self) {
        let ids: Vec<OpId> = self.ops.iter().flatten().map(|op| op.id).collect();
        for id in ids {
            self.cancel(id);
        }
        let until = Instant::now() + DROP_WAIT;
        let mut done = Vec::new();
        while self.live > 0 && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            if self
                .submit_and_wait(1, left.min(Duration::from_millis(100)))
                .is_err()
            {
                break;
            }
            self.reap(&mut done);
            done.clear(); // buffers freed, accepted connections closed: the kernel is done
        }
        if self.live > 0 {
            tracing::error!(
                in_flight = self.live,
                "io_uring operations did not complete at shutdown; their buffers are leaked"
            );
            for op in self.ops.drain(..).flatten() {
                let _ = ManuallyDrop::new(op);
            }
            // The pool is leaked with them (dropping a `Pool` frees nothing): a receive still
            // in flight may yet be given one of its buffers.
            return;
        }
        if let Some(pool) = self.pool.take()
            && self
                .ring
                .submitter()
                .unregister_buf_ring(POOL_GROUP)
                .is_ok()
        {
            // SAFETY: unregistered, and no operation is in flight.
            unsafe { pool.free() };
        }
        // A pool the kernel would not unregister is leaked: it may still know it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};

    /// Waits (bounded) for `n` completions.
    fn wait_for(ring: &mut Ring, n: usize) -> Vec<Done> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while done.len() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} completions",
                done.len()
            );
            ring.submit_and_wait(1, Duration::from_millis(100)).unwrap();
            ring.reap(&mut done);
        }
        done
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Pooled receives: each gets exactly its socket's bytes (at most a buffer's worth), the
    /// buffers go back to the pool (ten rounds through a pool of 2), and a receive that finds
    /// the pool empty fails with `ENOBUFS` and succeeds when armed again after the reap.
    #[test]
    fn pooled_receives_get_their_bytes_and_give_the_buffers_back() {
        let mut ring = Ring::new(8, (2, 16)).unwrap();
        if ring.pool_buffer().is_none() {
            // The driver then gives each receive a buffer of its own, as the other tests do.
            eprintln!("skipped: no provided buffer rings in this kernel (5.19)");
            return;
        }
        assert_eq!(ring.pool_buffer(), Some(16));
        let pairs: Vec<_> = (0..3).map(|_| pair()).collect();
        let mut lost = 0;
        for round in 0..10u8 {
            // Three receives in flight, two buffers: one finds none (or waits for data that
            // comes after the others', then finds one freed).
            let mut want = Vec::new();
            for (i, (a, b)) in pairs.iter().enumerate() {
                let msg = vec![b'a' + i as u8; 5 + usize::from(round)];
                (&*a).write_all(&msg).unwrap();
                want.push(msg);
                ring.push(i as u64, Op::RecvPooled { fd: b.as_raw_fd() });
            }
            let mut got: Vec<Option<Vec<u8>>> = vec![None; 3];
            let until = Instant::now() + Duration::from_secs(10);
            while got.iter().any(Option::is_none) {
                assert!(Instant::now() < until, "round {round}: {got:?}");
                for d in wait_for(&mut ring, 1) {
                    let i = d.tag as usize;
                    let Buf::Recv(buf) = d.buf else {
                        panic!("not a receive")
                    };
                    match d.result {
                        Ok(n) => {
                            assert_eq!(buf.len(), n);
                            assert_eq!(buf.capacity(), 16);
                            got[i] = Some(buf);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            lost += 1;
                            let fd = pairs[i].1.as_raw_fd();
                            ring.push(i as u64, Op::RecvPooled { fd });
                        }
                        Err(e) => panic!("round {round}: {e}"),
                    }
                }
            }
            let got: Vec<Vec<u8>> = got.into_iter().flatten().collect();
            assert_eq!(got, want, "round {round}");
        }
        assert!(lost >= 1, "three receives on two buffers never ran out");
        assert_eq!(ring.live, 0);
    }

    #[test]
    fn a_receive_appends_exactly_the_bytes_sent_after_what_the_buffer_held() {
        let mut ring = Ring::new(8, (4, 256)).unwrap();
        let (mut a, b) = pair();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"kept:");
        let id = ring.push(
            7,
            Op::Recv {
                fd: b.as_raw_fd(),
                buf,
            },
        );
        a.write_all(b"hello").unwrap();
        let done = wait_for(&mut ring, 1);
        assert_eq!((done[0].tag, done[0].id), (7, id));
        assert_eq!(done[0].result.as_ref().ok(), Some(&5));
        let Buf::Recv(buf) = &done[0].buf else {
            panic!("not a receive buffer")
        };
        assert_eq!(buf, b"kept:hello");
    }

    #[test]
    fn a_late_cancel_of_a_finished_operation_spares_the_one_that_reuses_its_slot() {
        let mut ring = Ring::new(8, (4, 256)).unwrap();
        let (mut a, b) = pair();
        let first = ring.push(
            1,
            Op::Recv {
                fd: b.as_raw_fd(),
                buf: Vec::with_capacity(8),
            },
        );
        a.write_all(b"one").unwrap();
        assert_eq!(wait_for(&mut ring, 1)[0].id, first);
        let second = ring.push(
            2,
            Op::Recv {
                fd: b.as_raw_fd(),
                buf: Vec::with_capacity(8),
            },
        );
        assert_eq!(
            first & 0xFFFF_FFFF,
            second & 0xFFFF_FFFF,
            "the slot is reused"
        );
        ring.cancel(first);
        ring.submit_and_wait(0, Duration::ZERO).unwrap();
        a.write_all(b"two").unwrap();
        let done = wait_for(&mut ring, 1);
        assert_eq!(done[0].id, second);
        assert!(
            matches!(&done[0].buf, Buf::Recv(b) if b == b"two"),
            "{:?}",
            done[0].result
        );
    }

    #[test]
    fn a_send_and_an_accept_complete_with_their_results() {
        let mut ring = Ring::new(8, (4, 256)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.push(1, Op::Accept { fd: l.as_raw_fd() });
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let done = wait_for(&mut ring, 1);
        let Buf::Accepted(Some(server)) = &done[0].buf else {
            panic!("no connection accepted: {:?}", done[0].result)
        };
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        let fd = server.as_raw_fd();
        ring.push(
            2,
            Op::Send {
                fd,
                buf: b"reply".to_vec(),
            },
        );
        let done2 = wait_for(&mut ring, 1);
        assert_eq!(done2[0].result.as_ref().ok(), Some(&5));
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"reply");
    }

    #[test]
    fn a_multishot_accept_takes_every_connection_until_cancelled() {
        let mut ring = Ring::new(8, (4, 256)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let id = ring.push(9, Op::AcceptMulti { fd: l.as_raw_fd() });
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
            .collect();
        let done = wait_for(&mut ring, 3);
        let mut peers: Vec<_> = done
            .iter()
            .map(|d| {
                assert!(d.more && d.id == id && d.tag == 9);
                let Buf::Accepted(Some(s)) = &d.buf else {
                    panic!("no connection: {:?}", d.result)
                };
                s.peer_addr().unwrap()
            })
            .collect();
        let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort();
        want.sort();
        assert_eq!(peers, want);
        assert_eq!(ring.live, 1, "the multishot accept goes on");
        ring.cancel(id);
        let last = wait_for(&mut ring, 1);
        assert!(!last[0].more);
        assert_eq!(ring.live, 0);
    }

    #[test]
    fn a_datagram_comes_with_its_source_and_the_reply_goes_back_to_it_over_ipv4_and_ipv6() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let mut ring = Ring::new(8, (4, 256)).unwrap();
            let server = UdpSocket::bind(local).unwrap();
            let client = UdpSocket::bind(local).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let fd = server.as_raw_fd();
            ring.push(
                3,
                Op::RecvMsg {
                    fd,
                    dg: Datagram::new(100),
                },
            );
            client
                .send_to(b"ping", server.local_addr().unwrap())
                .unwrap();
            let mut done = wait_for(&mut ring, 1);
            let Some(Done {
                buf: Buf::Datagram(mut dg),
                result,
                ..
            }) = done.pop()
            else {
                panic!("no datagram")
            };
            assert_eq!(result.ok(), Some(4));
            let from = dg.source().unwrap();
            assert_eq!(from, client.local_addr().unwrap(), "{local}");
            let (request, reply) = dg.parts();
            assert_eq!(request, b"ping");
            reply[..4].copy_from_slice(b"PONG");
            ring.push(
                4,
                Op::SendMsg {
                    fd,
                    dg,
                    len: 4,
                    to: from,
                },
            );
            let done = wait_for(&mut ring, 1);
            assert_eq!(done[0].result.as_ref().ok(), Some(&4));
            let mut got = [0u8; 8];
            let (n, peer) = client.recv_from(&mut got).unwrap();
            assert_eq!(
                (&got[..n], peer),
                (&b"PONG"[..], server.local_addr().unwrap())
            );
        }
    }

    #[test]
    fn a_cancelled_receive_gives_its_buffer_back_and_a_ring_dropped_busy_drains_at_once() {
        let mut ring = Ring::new(8, (4, 256)).unwrap();
        let (_a, b) = pair();
        let id = ring.push(
            5,
            Op::Recv {
                fd: b.as_raw_fd(),
                buf: Vec::with_capacity(16),
            },
        );
        ring.submit_and_wait(0, Duration::ZERO).unwrap();
        ring.cancel(id);
        let done = wait_for(&mut ring, 1);
        assert_eq!(
            done[0]
                .result
                .as_ref()
                .map_err(io::Error::raw_os_error)
                .err(),
            Some(Some(libc::ECANCELED))
        );
        assert!(matches!(&done[0].buf, Buf::Recv(b) if b.is_empty() && b.capacity() >= 16));
        // Receives still waiting when the ring is dropped: cancelled, and their completions
        // awaited, well within the drop's bound.
        for k in 0..4 {
            ring.push(
                k,
                Op::Recv {
                    fd: b.as_raw_fd(),
                    buf: Vec::with_capacity(16),
                },
            );
        }
        ring.submit_and_wait(0, Duration::ZERO).unwrap();
        assert_eq!(ring.live, 4);
        let started = Instant::now();
        drop(ring);
        assert!(started.elapsed() < DROP_WAIT / 2, "{:?}", started.elapsed());
    }
}
