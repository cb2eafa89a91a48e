//! The control socket: binding it (mode 0660, group `agentd`), who is on the other end
//! (SO_PEERCRED, SO_PEERGROUPS), and request lines with the descriptors that come with
//! them (SCM_RIGHTS), read with a size limit and a deadline so that no client can hold
//! the daemon up.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

/// Descriptors a request may carry at most (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Who is on the other end of a connection, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
}

impl Peer {
    /// Whether the peer is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Socket errors, naming the path or the call.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: {what}: {source}", path = .path.display())]
    Setup {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: another agentd daemon is listening there", path = .path.display())]
    InUse { path: PathBuf },
    #[error("peer credentials: {0}")]
    Peer(std::io::Error),
}

/// Binds the control socket at `path`: its directory is created (0755), a stale socket
/// file (nobody listening) is replaced, and the socket gets mode 0660 and group `gid`.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, SocketError> {
    bind_mode(path, gid, 0o660)
}

/// The token socket: mode 0666, anyone may connect (the session serves only requests
/// that carry a valid token).
pub fn bind_open(path: &Path) -> Result<UnixListener, SocketError> {
    bind_mode(path, None, 0o666)
}

fn bind_mode(path: &Path, gid: Option<u32>, mode: u32) -> Result<UnixListener, SocketError> {
    let setup = |what, source| SocketError::Setup {
        path: path.to_path_buf(),
        what,
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| setup("create its directory", e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|e| setup("remove the stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| setup("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| setup("chmod", e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(|e| setup("chown", e))?;
    }
    Ok(listener)
}

/// The credentials of the peer of `stream`.
pub fn peer(stream: &UnixStream) -> Result<Peer, SocketError> {
    let cred = stream.peer_cred().map_err(SocketError::Peer)?;
    let groups = peer_groups(stream.as_raw_fd()).map_err(SocketError::Peer)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().unwrap_or(0),
        groups,
    })
}

/// SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups when it connected.
fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `groups`, which has them.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 {
            let need = len as usize / std::mem::size_of::<libc::gid_t>();
            groups.resize(need.max(groups.len() * 2), 0);
            continue;
        }
        return Err(e);
    }
}

/// Why a request line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request is longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("no whole request within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before a whole request arrived")]
    Closed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("a request carried {0} descriptors; at most {MAX_FDS} are accepted")]
    TooManyFds(usize),
}

/// A connection's incoming side: bytes read past the last line are kept for the next.
pub struct LineReader {
    buf: Vec<u8>,
    limit: usize,
}

impl LineReader {
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// The next line (without its newline) and any descriptors that came with it,
    /// within `deadline`. Descriptors arrive with the first bytes of a message.
    pub async fn next(
        &mut self,
        stream: &UnixStream,
        deadline: Option<Duration>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), ReadError> {
        match deadline {
            Some(d) => tokio::time::timeout(d, self.read_line(stream))
                .await
                .map_err(|_| ReadError::Timeout(d))?,
            None => self.read_line(stream).await,
        }
    }

    async fn read_line(
        &mut self,
        stream: &UnixStream,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), ReadError> {
        let mut fds = Vec::new();
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok((line, fds));
            }
            if self.buf.len() > self.limit {
                return Err(ReadError::TooLong { limit: self.limit });
            }
            stream.readable().await.map_err(ReadError::Io)?;
            let mut chunk = [0u8; 16 * 1024];
            let got = stream.try_io(Interest::READABLE, || {
                recv_with_fds(stream.as_raw_fd(), &mut chunk)
            });
            match got {
                Ok((0, _)) => return Err(ReadError::Closed),
                Ok((n, received)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    fds.extend(received);
                    if fds.len() > MAX_FDS {
                        return Err(ReadError::TooManyFds(fds.len()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

/// One `recvmsg`: bytes into `buf`, and the descriptors of an SCM_RIGHTS message
/// (opened close-on-exec).
fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS + 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: SCM_RIGHTS just installed `r` in this process; nothing else
                // owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// Sends `bytes` with `fds` attached (client side; blocking).
pub fn send_with_fds(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    let sent = nix::sys::socket::sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::empty(), None)
        .map_err(std::io::Error::from)?;
    if sent < bytes.len() {
        // The descriptors went with the first part; the rest is plain bytes.
        let mut rest = &bytes[sent..];
        while !rest.is_empty() {
            // SAFETY: write(2) from a live slice to a socket fd the caller owns.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            rest = &rest[n as usize..];
        }
    }
    Ok(())
}
