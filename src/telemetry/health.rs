//! Liveness and readiness, as `/healthz` and `/readyz` report them.
//!
//! - `/healthz` is 200 while the process serves HTTP at all (a hung runtime fails it).
//! - `/readyz` is 200 when this replica does what it should right now:
//!   - without leader election, or as the leader: once every cache (the watched custom resources
//!     and the managed children) holds its first full list;
//!   - as a standby (leader election on, another replica holds the Lease): as long as its last
//!     look at the Lease succeeded, i.e. it can take over. A standby that cannot read the Lease
//!     is not ready;
//!   - never while shutting down.
//!
//!   A standby is ready on purpose: a Deployment's rolling update waits for new pods to be
//!   ready, and a standby never becomes the leader before an old one steps down.

use std::sync::{Arc, Mutex};

/// This replica's part in leader election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// No leader election: this replica runs the controllers.
    #[default]
    Single,
    /// Leader election on, another replica leads (or none does yet). `lease_reachable`: the
    /// last read or write of the Lease succeeded.
    Standby { lease_reachable: bool },
    /// Leader election on, this replica holds the Lease and runs the controllers.
    Leader,
}

#[derive(Debug, Default)]
struct State {
    role: Role,
    synced: bool,
    stopping: bool,
}

/// Shared readiness state. Cheap to clone; every clone sees the same state.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    pub fn set_role(&self, role: Role) {
        self.lock().role = role;
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    /// Every cache of the running controllers holds its first full list.
    pub fn set_synced(&self, synced: bool) {
        self.lock().synced = synced;
    }

    /// Shutdown started: not ready any more.
    pub fn set_stopping(&self) {
        self.lock().stopping = true;
    }

    /// `Ok(what)` when ready, `Err(why not)` otherwise.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        let s = self.lock();
        if s.stopping {
            return Err("shutting down");
        }
        match (s.role, s.synced) {
            (
                Role::Standby {
                    lease_reachable: true,
                },
                _,
            ) => Ok("standby: another replica leads"),
            (
                Role::Standby {
                    lease_reachable: false,
                },
                _,
            ) => Err("standby: the Lease cannot be read"),
            (Role::Single, true) => Ok("ready"),
            (Role::Leader, true) => Ok("leader: ready"),
            (_, false) => Err("caches not synced yet"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind: keep serving it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_replica_is_ready_once_synced() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err("caches not synced yet"));
        h.set_synced(true);
        assert_eq!(h.readiness(), Ok("ready"));
        h.set_stopping();
        assert_eq!(h.readiness(), Err("shutting down"));
    }

    #[test]
    fn a_standby_is_ready_while_it_can_read_the_lease() {
        let h = Health::default();
        h.set_role(Role::Standby {
            lease_reachable: false,
        });
        assert!(h.readiness().is_err());
        h.set_role(Role::Standby {
            lease_reachable: true,
        });
        assert_eq!(h.readiness(), Ok("standby: another replica leads"));
        h.set_stopping();
        assert!(h.readiness().is_err());
    }

    #[test]
    fn a_new_leader_is_ready_once_its_caches_synced() {
        let h = Health::default();
        h.set_role(Role::Leader);
        assert_eq!(h.readiness(), Err("caches not synced yet"));
        h.set_synced(true);
        assert_eq!(h.readiness(), Ok("leader: ready"));
    }
}
