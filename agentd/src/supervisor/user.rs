//! Whom the command runs as. The agent never runs as uid 0 by accident: a standalone
//! root run takes `SUDO_UID`/`SUDO_GID` or `--user`, and `--user root` is the explicit
//! way to run an agent as root; a daemon run takes the client's credentials.
//!
//! The switch itself happens in the child between fork and exec
//! ([`PreparedUser::apply_in_child`]): raw `setgroups`, `setresgid`, `setresuid` on
//! integers prepared here, no allocation.

use nix::unistd::{Gid, Group, Uid, User};

/// Supplementary groups passed at most (`NGROUPS_MAX` is 65536; a caller has far fewer).
pub const MAX_GROUPS: usize = 256;

/// A uid, its primary gid and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The user name, when the uid has one (for records and messages).
    pub name: Option<String>,
}

/// Why a `--user` value or `SUDO_UID` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("--user {0}: no such user")]
    NoUser(String),
    #[error("--user {spec}: no such group `{group}`")]
    NoGroup { spec: String, group: String },
    #[error("{var}={value}: not a number")]
    BadEnv { var: &'static str, value: String },
    #[error("reading the user database for {what}: {source}")]
    Lookup {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{name} has {count} supplementary groups; at most {MAX_GROUPS} are passed")]
    TooManyGroups { name: String, count: usize },
}

impl UserSpec {
    /// `USER[:GROUP]`, each a name or a number. Without GROUP, the user's primary group;
    /// supplementary groups are the user's (from the group database) when it has a name.
    pub fn parse(spec: &str) -> Result<Self, UserError> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        fn lookup(what: &str) -> impl Fn(nix::errno::Errno) -> UserError + '_ {
            move |source| UserError::Lookup {
                what: what.to_owned(),
                source,
            }
        }
        let entry = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup(user))?,
            Err(_) => Some(
                User::from_name(user)
                    .map_err(lookup(user))?
                    .ok_or_else(|| UserError::NoUser(user.to_owned()))?,
            ),
        };
        let uid = match (&entry, user.parse::<u32>()) {
            (Some(e), _) => e.uid.as_raw(),
            (None, Ok(n)) => n,
            (None, Err(_)) => return Err(UserError::NoUser(user.to_owned())),
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => Group::from_name(g)
                    .map_err(lookup(g))?
                    .ok_or_else(|| UserError::NoGroup {
                        spec: spec.to_owned(),
                        group: g.to_owned(),
                    })?
                    .gid
                    .as_raw(),
            },
            None => match &entry {
                Some(e) => e.gid.as_raw(),
                // A bare number without a passwd entry: its own number as the group.
                None => uid,
            },
        };
        Self::with_groups(uid, gid, entry.map(|e| e.name))
    }

    /// `SUDO_UID`/`SUDO_GID`, when sudo started agentd.
    pub fn from_sudo_env() -> Result<Option<Self>, UserError> {
        let Some((uid, gid)) = sudo_ids()? else {
            return Ok(None);
        };
        let entry = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let gid = gid.unwrap_or_else(|| entry.as_ref().map_or(uid, |e| e.gid.as_raw()));
        Self::with_groups(uid, gid, entry.map(|e| e.name)).map(Some)
    }

    /// What [`from_sudo_env`](Self::from_sudo_env) resolves, as a `--user` spec
    /// ([`parse`](Self::parse) gives the same user): `UID:GID`, or `UID` without
    /// `SUDO_GID`. For a daemon client, which lets the daemon look the user up.
    pub fn sudo_spec() -> Result<Option<String>, UserError> {
        Ok(sudo_ids()?.map(|(uid, gid)| match gid {
            Some(gid) => format!("{uid}:{gid}"),
            None => uid.to_string(),
        }))
    }

    /// `uid`/`gid` with the supplementary groups the group database gives `name`.
    fn with_groups(uid: u32, gid: u32, name: Option<String>) -> Result<Self, UserError> {
        let groups = match &name {
            Some(n) => {
                let c = std::ffi::CString::new(n.as_str()).map_err(|_| UserError::Lookup {
                    what: n.clone(),
                    source: nix::errno::Errno::EINVAL,
                })?;
                nix::unistd::getgrouplist(&c, Gid::from_raw(gid))
                    .map_err(|source| UserError::Lookup {
                        what: format!("the groups of {n}"),
                        source,
                    })?
                    .into_iter()
                    .map(Gid::as_raw)
                    .collect()
            }
            None => vec![gid],
        };
        Self::checked(uid, gid, groups, name)
    }

    /// A caller's credentials as the daemon learnt them (SO_PEERCRED and its groups).
    pub fn from_credentials(uid: u32, gid: u32, groups: Vec<u32>) -> Result<Self, UserError> {
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        Self::checked(uid, gid, groups, name)
    }

    fn checked(
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
        name: Option<String>,
    ) -> Result<Self, UserError> {
        let spec = Self {
            uid,
            gid,
            groups,
            name,
        };
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), UserError> {
        if self.groups.len() > MAX_GROUPS {
            return Err(UserError::TooManyGroups {
                name: self.name.clone().unwrap_or_else(|| self.uid.to_string()),
                count: self.groups.len(),
            });
        }
        Ok(())
    }

    /// The integers the child needs.
    pub fn prepare(&self) -> PreparedUser {
        let mut groups = [0 as libc::gid_t; MAX_GROUPS];
        let n = self.groups.len().min(MAX_GROUPS);
        groups[..n].copy_from_slice(&self.groups[..n]);
        PreparedUser {
            uid: self.uid,
            gid: self.gid,
            groups,
            ngroups: n,
        }
    }
}

/// What the child applies: plain integers only.
#[derive(Clone)]
pub struct PreparedUser {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: [libc::gid_t; MAX_GROUPS],
    ngroups: usize,
}

impl PreparedUser {
    /// Child side, between fork and exec, while the process still has `CAP_SETGID` and
    /// `CAP_SETUID`: supplementary groups, then gid, then uid (the uid last, since it
    /// takes away the right to change the others). Returns the raw errno on failure.
    pub fn apply_in_child(&self) -> Result<(), i32> {
        // SAFETY: async-signal-safe raw syscalls on integers and an array on `self`,
        // which lives in the parent's memory image copied into this child.
        unsafe {
            if libc::setgroups(self.ngroups, self.groups.as_ptr()) != 0 {
                return Err(errno());
            }
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(errno());
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `SUDO_UID` and, if set, `SUDO_GID`, when sudo started agentd.
fn sudo_ids() -> Result<Option<(u32, Option<u32>)>, UserError> {
    let Ok(uid) = std::env::var("SUDO_UID") else {
        return Ok(None);
    };
    let parse = |var: &'static str, value: &str| {
        value.parse::<u32>().map_err(|_| UserError::BadEnv {
            var,
            value: value.to_owned(),
        })
    };
    let uid = parse("SUDO_UID", &uid)?;
    let gid = match std::env::var("SUDO_GID") {
        Ok(g) => Some(parse("SUDO_GID", &g)?),
        Err(_) => None,
    };
    Ok(Some((uid, gid)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn root_by_name_and_number() {
        let by_name = UserSpec::parse("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.name.as_deref(), Some("root"));
        assert!(by_name.groups.contains(&0));
        let by_number = UserSpec::parse("0:0").unwrap();
        assert_eq!((by_number.uid, by_number.gid), (0, 0));
    }

    #[test]
    fn an_unknown_user_or_group_is_named() {
        assert_eq!(
            UserSpec::parse("no-such-user-xyz").unwrap_err().to_string(),
            "--user no-such-user-xyz: no such user"
        );
        assert_eq!(
            UserSpec::parse("root:no-such-group-xyz")
                .unwrap_err()
                .to_string(),
            "--user root:no-such-group-xyz: no such group `no-such-group-xyz`"
        );
    }

    #[test]
    fn a_number_without_an_entry_is_its_own_group() {
        let u = UserSpec::parse("4242424").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (4242424, 4242424, vec![4242424])
        );
    }
}
