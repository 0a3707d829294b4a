//! The C calls behind [`super`] that have no safe binding, and the only `unsafe` code in it.
//!
//! Only a `hostent` carries a host's alias list, which Python's `gethostbyname_ex` and
//! `gethostbyaddr` return; `getaddrinfo` (dns-lookup) does not. libc 0.2 defines `struct hostent`
//! but binds no `gethostby*` function, so the reentrant glibc/musl calls are declared here.
//! `getservbyname`/`getservbyport` are bound by libc but return a pointer into static storage
//! that the next call overwrites, so they run under one lock and are copied out before it is
//! released.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;
use std::sync::{Mutex, PoisonError};

/// `h_errno` values (netdb.h), the same on glibc and musl.
pub(super) const HOST_NOT_FOUND: c_int = 1;
pub(super) const TRY_AGAIN: c_int = 2;
pub(super) const NO_RECOVERY: c_int = 3;
pub(super) const NO_DATA: c_int = 4;
const NETDB_INTERNAL: c_int = -1;

/// The first buffer for the `_r` calls is Python's (16 KiB in `socketmodule.c`), which always
/// fits `/etc/hosts` entries. Python gives up when it is too small; we double it on `ERANGE`,
/// up to 1 MiB (a DNS answer with thousands of addresses), which costs nothing in the usual case.
const FIRST_BUFFER_BYTES: usize = 16 * 1024;
const MAX_BUFFER_BYTES: usize = 1024 * 1024;

unsafe extern "C" {
    fn gethostbyname_r(
        name: *const c_char,
        ret: *mut libc::hostent,
        buf: *mut c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
    ) -> c_int;

    fn gethostbyname2_r(
        name: *const c_char,
        af: c_int,
        ret: *mut libc::hostent,
        buf: *mut c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
    ) -> c_int;

    fn gethostbyaddr_r(
        addr: *const c_void,
        len: libc::socklen_t,
        af: c_int,
        ret: *mut libc::hostent,
        buf: *mut c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
    ) -> c_int;
}

/// A `hostent`, copied out of the call's buffer.
#[derive(Debug)]
pub(super) struct HostEnt {
    pub name: String,
    pub aliases: Vec<String>,
    pub addresses: Vec<IpAddr>,
}

/// Why a `gethostby*_r` call found nothing.
#[derive(Debug)]
pub(super) enum HostError {
    /// The resolver's answer, an `h_errno` such as [`HOST_NOT_FOUND`] or [`TRY_AGAIN`].
    Resolver(c_int),
    /// A system error (`NETDB_INTERNAL`, or an error number returned by the call).
    Os(io::Error),
}

/// The address families `gethostbyname2_r` takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Family {
    V4,
    V6,
}

/// `gethostbyname_r(name)`: what Python's `gethostbyname_ex` calls.
pub(super) fn host_by_name(name: &CStr) -> Result<HostEnt, HostError> {
    call_with_buffer(|entry, buf, len, result, h_errno| {
        // SAFETY: `name` is NUL-terminated and outlives the call; the other pointers are valid
        // for writing (`buf` for `len` bytes) and outlive the call, as `call_with_buffer` says.
        unsafe { gethostbyname_r(name.as_ptr(), entry, buf, len, result, h_errno) }
    })
}

/// `gethostbyname2_r(name, family)`: the aliases of a name that has only IPv6 addresses.
pub(super) fn host_by_name2(name: &CStr, family: Family) -> Result<HostEnt, HostError> {
    let af = match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    };
    call_with_buffer(|entry, buf, len, result, h_errno| {
        // SAFETY: as in `host_by_name`.
        unsafe { gethostbyname2_r(name.as_ptr(), af, entry, buf, len, result, h_errno) }
    })
}

/// `gethostbyaddr_r(addr)`: what Python's `gethostbyaddr` calls.
pub(super) fn host_by_addr(addr: IpAddr) -> Result<HostEnt, HostError> {
    let (bytes, af): (Vec<u8>, c_int) = match addr {
        IpAddr::V4(v4) => (v4.octets().to_vec(), libc::AF_INET),
        IpAddr::V6(v6) => (v6.octets().to_vec(), libc::AF_INET6),
    };
    let addr_len = libc::socklen_t::try_from(bytes.len()).expect("4 or 16 bytes");
    call_with_buffer(|entry, buf, len, result, h_errno| {
        // SAFETY: `bytes` holds `addr_len` bytes of an address of family `af` and outlives the
        // call; the other pointers are valid as `call_with_buffer` says.
        unsafe {
            gethostbyaddr_r(
                bytes.as_ptr().cast(),
                addr_len,
                af,
                entry,
                buf,
                len,
                result,
                h_errno,
            )
        }
    })
}

/// Runs one `gethostby*_r` call with a buffer that grows on `ERANGE`, and copies the answer out.
///
/// `call` gets the `hostent` to fill, the buffer and its length, where to put the result
/// pointer, and where to put `h_errno`; all stay valid until it returns.
fn call_with_buffer(
    mut call: impl FnMut(
        *mut libc::hostent,
        *mut c_char,
        libc::size_t,
        *mut *mut libc::hostent,
        *mut c_int,
    ) -> c_int,
) -> Result<HostEnt, HostError> {
    let mut buf: Vec<c_char> = vec![0; FIRST_BUFFER_BYTES];
    loop {
        // SAFETY: `hostent` is a C struct of pointers and integers, for which all zeroes is a
        // valid value (null pointers); the call overwrites it before anything reads it.
        let mut entry: libc::hostent = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::hostent = ptr::null_mut();
        let mut h_errno: c_int = 0;
        let rc = call(
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
            &mut h_errno,
        );
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER_BYTES {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if result.is_null() {
            return Err(match (h_errno, rc) {
                (NETDB_INTERNAL, 0) => HostError::Os(io::Error::last_os_error()),
                (NETDB_INTERNAL, rc) => HostError::Os(io::Error::from_raw_os_error(rc)),
                (0, 0) => HostError::Resolver(HOST_NOT_FOUND),
                (0, rc) => HostError::Os(io::Error::from_raw_os_error(rc)),
                (h_errno, _) => HostError::Resolver(h_errno),
            });
        }
        // SAFETY: on success `result` points to `entry`, whose strings and lists point into
        // `buf`; both are alive and unchanged until this block ends.
        return Ok(unsafe { copy_hostent(&*result) });
    }
}

/// Copies a `hostent` into owned values.
///
/// # Safety
///
/// `h` must come from a successful `gethostby*_r` call whose buffer is still alive: `h_name` a
/// C string or null, `h_aliases` and `h_addr_list` null-terminated arrays (or null) of C strings
/// and of `h_length`-byte addresses.
unsafe fn copy_hostent(h: &libc::hostent) -> HostEnt {
    let name = if h.h_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `h_name` is a C string (the caller's contract).
        unsafe { CStr::from_ptr(h.h_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut aliases = Vec::new();
    // SAFETY: `h_aliases` is a null-terminated array of C strings (the caller's contract).
    for alias in unsafe { null_terminated(h.h_aliases) } {
        // SAFETY: each element is a C string.
        aliases.push(
            unsafe { CStr::from_ptr(alias) }
                .to_string_lossy()
                .into_owned(),
        );
    }
    let mut addresses = Vec::new();
    // SAFETY: `h_addr_list` is a null-terminated array of addresses (the caller's contract).
    for raw in unsafe { null_terminated(h.h_addr_list) } {
        let raw = raw.cast::<u8>();
        let address = match (h.h_addrtype, h.h_length) {
            (libc::AF_INET, 4) => {
                let mut octets = [0u8; 4];
                // SAFETY: an AF_INET entry's addresses are `h_length` = 4 bytes each.
                unsafe { ptr::copy_nonoverlapping(raw, octets.as_mut_ptr(), 4) };
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            (libc::AF_INET6, 16) => {
                let mut octets = [0u8; 16];
                // SAFETY: an AF_INET6 entry's addresses are `h_length` = 16 bytes each.
                unsafe { ptr::copy_nonoverlapping(raw, octets.as_mut_ptr(), 16) };
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => continue, // no other family is asked for
        };
        addresses.push(address);
    }
    HostEnt {
        name,
        aliases,
        addresses,
    }
}

/// The elements of a null-terminated array of pointers (none if the array itself is null).
///
/// # Safety
///
/// `list` must be null or point to an array of pointers that ends with a null pointer and stays
/// alive and unchanged while the result is used.
unsafe fn null_terminated(list: *mut *mut c_char) -> Vec<*mut c_char> {
    let mut items = Vec::new();
    if list.is_null() {
        return items;
    }
    let mut at = list;
    loop {
        // SAFETY: `at` is within the array: it starts at its first element and only moves on
        // past elements that were not the terminating null.
        let item = unsafe { *at };
        if item.is_null() {
            return items;
        }
        items.push(item);
        // SAFETY: `item` was not the terminator, so the array goes on at least one more element.
        at = unsafe { at.add(1) };
    }
}

/// A `servent`, copied out of libc's static storage.
#[derive(Debug)]
pub(super) struct ServEnt {
    pub name: String,
    pub aliases: Vec<String>,
    pub port: u16,
}

/// `getservbyname` and `getservbyport` share one static `servent`; this lock serialises them
/// within socketkit (a library that calls them directly, bypassing it, can still race).
static SERVICES_DB: Mutex<()> = Mutex::new(());

/// `getservbyname(name, protocol)`; `None` when the database has no such entry.
pub(super) fn serv_by_name(name: &CStr, protocol: &CStr) -> Option<ServEnt> {
    let _guard = SERVICES_DB.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: both arguments are NUL-terminated and outlive the call.
    let entry = unsafe { libc::getservbyname(name.as_ptr(), protocol.as_ptr()) };
    // SAFETY: a non-null result points to libc's static `servent`, which only these calls
    // overwrite, and they wait for the lock we hold until the copy is made.
    unsafe { entry.as_ref().map(|e| copy_servent(e)) }
}

/// `getservbyport(port, protocol)`; `None` when the database has no such entry.
pub(super) fn serv_by_port(port: u16, protocol: &CStr) -> Option<ServEnt> {
    let _guard = SERVICES_DB.lock().unwrap_or_else(PoisonError::into_inner);
    // The port goes in network byte order, as an int (as Python passes `htons(port)`).
    // SAFETY: `protocol` is NUL-terminated and outlives the call.
    let entry = unsafe { libc::getservbyport(c_int::from(port.to_be()), protocol.as_ptr()) };
    // SAFETY: as in `serv_by_name`.
    unsafe { entry.as_ref().map(|e| copy_servent(e)) }
}

/// Copies a `servent` into owned values.
///
/// # Safety
///
/// `s` must be the entry libc just returned: `s_name` a C string, `s_aliases` a null-terminated
/// array of C strings, both alive while this runs.
unsafe fn copy_servent(s: &libc::servent) -> ServEnt {
    // SAFETY: `s_name` is a C string (the caller's contract).
    let name = unsafe { CStr::from_ptr(s.s_name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `s_aliases` is a null-terminated array of C strings (the caller's contract).
    let aliases = unsafe { null_terminated(s.s_aliases) }
        .into_iter()
        // SAFETY: each element is a C string.
        .map(|alias| {
            unsafe { CStr::from_ptr(alias) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // `s_port` holds the port in network byte order in the low 16 bits of an int.
    let port = u16::from_be(s.s_port as u16);
    ServEnt {
        name,
        aliases,
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_has_a_hostent_with_the_loopback_address() {
        let entry = host_by_name(c"localhost").unwrap();
        assert!(entry.addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!entry.name.is_empty());
    }

    #[test]
    fn the_loopback_address_has_a_name() {
        let entry = host_by_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert!(!entry.name.is_empty());
        assert_eq!(entry.addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }

    #[test]
    fn a_failed_look_up_gives_an_h_errno() {
        // An empty name fails in glibc's own parsing, with no DNS query that could be slow.
        for family in [Family::V4, Family::V6] {
            let err = host_by_name2(c"", family).unwrap_err();
            assert!(matches!(err, HostError::Resolver(1..=4)), "{err:?}");
        }
    }

    #[test]
    fn a_tiny_buffer_grows_until_the_answer_fits() {
        // The first call answers ERANGE, as glibc does when an answer does not fit.
        let mut sizes = Vec::new();
        let entry = call_with_buffer(|entry, buf, len, result, h_errno| {
            sizes.push(len);
            if len < 2 * FIRST_BUFFER_BYTES {
                return libc::ERANGE;
            }
            // SAFETY: as in `host_by_name`.
            unsafe { gethostbyname_r(c"localhost".as_ptr(), entry, buf, len, result, h_errno) }
        })
        .unwrap();
        assert_eq!(sizes, vec![FIRST_BUFFER_BYTES, 2 * FIRST_BUFFER_BYTES]);
        assert!(entry.addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn services_come_from_the_database_with_their_aliases() {
        let Some(http) = serv_by_name(c"http", c"tcp") else {
            return; // no services database on this machine: the built-in table covers it
        };
        assert_eq!(http.port, 80);
        let by_port = serv_by_port(80, c"tcp").unwrap();
        assert_eq!(by_port.name, http.name);
        assert!(serv_by_name(c"socketkit-no-such-service", c"tcp").is_none());
    }
}
