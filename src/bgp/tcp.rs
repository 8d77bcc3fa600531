//! TCP for BGP: outgoing connections bound to a local address, and TCP MD5
//! signatures (RFC 2385) set with `setsockopt(TCP_MD5SIG)`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// `struct tcp_md5sig` of linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// Sets (or with `None`, clears) the MD5 key for `peer` on socket `fd`.
pub fn set_md5(fd: RawFd, peer: IpAddr, key: Option<&str>) -> io::Result<()> {
    let key = key.unwrap_or("").as_bytes();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TCP MD5 key longer than 80 bytes"));
    }
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, both are POD.
            unsafe { std::ptr::write(&mut sig.addr as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, both are POD.
            unsafe { std::ptr::write(&mut sig.addr as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: fd is a socket we own; sig is a valid tcp_md5sig of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const _ as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Connects to `remote`, from `local` if given, with an MD5 key if given.
pub async fn connect(
    remote: SocketAddr,
    local: Option<IpAddr>,
    password: Option<&str>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    if let Some(key) = password {
        set_md5(socket.as_raw_fd(), remote.ip(), Some(key))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(remote))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {remote} timed out")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn md5_keys_can_be_set_and_connect_works() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        set_md5(listener.as_raw_fd(), "127.0.0.1".parse().unwrap(), Some("secret")).unwrap();
        assert!(set_md5(listener.as_raw_fd(), "127.0.0.1".parse().unwrap(), Some(&"x".repeat(81))).is_err());
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let s =
            connect(addr, Some("127.0.0.1".parse().unwrap()), Some("secret"), Duration::from_secs(2)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        accept.await.unwrap().unwrap();
    }
}
