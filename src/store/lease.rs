//! One finalizer per session: a lease names its holder by pid *and* process start time, so a
//! recycled pid is not mistaken for the holder, and expires so a holder that hangs forever does
//! not block the session forever.

use serde::{Deserialize, Serialize};

use super::records::{decode, encode};
use super::{LeaseOutcome, Result};
use crate::ids::SessionId;
use crate::machine::Millis;

/// A lease not renewed for this long is free even if its process still runs. Every transition
/// renews it; the longest quiet stretch of a live machine is one retry backoff or poll.
pub const LEASE_TTL_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// Start time in clock ticks since boot (Linux `/proc/<pid>/stat` field 22); 0 if unknown.
    pub start_ticks: u64,
}

impl Holder {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Holder {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// The process `pid` as it is now, if it runs.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Holder {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// How long ago the process started, in milliseconds, if known: not when its start time is
    /// unknown (0), nor when the reading is impossible (a start after now).
    pub fn age_ms(&self) -> Option<u64> {
        age_at(since_boot_ms()?, self.start_ticks)
    }

    /// The process still runs, and is the same one (not a recycled pid).
    pub fn is_alive(&self) -> bool {
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let exists = unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A zombie has exited; only its parent has not collected it yet.
        let zombie = matches!(state(self.pid), Some('Z' | 'X'));
        exists && !zombie && (self.start_ticks == 0 || start_ticks(self.pid) == Some(self.start_ticks))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: Holder,
    pub expires_at: Millis,
}

impl Lease {
    pub fn is_live(&self, now: Millis) -> bool {
        now < self.expires_at && self.holder.is_alive()
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

pub fn read(tree: &sled::Tree, session: SessionId) -> Result<Option<Lease>> {
    tree.get(session.as_bytes())?.map(|v| decode(&v)).transpose()
}

pub fn acquire(tree: &sled::Tree, session: SessionId, holder: &Holder, now: Millis) -> Result<LeaseOutcome> {
    if let Some(lease) = read(tree, session)? {
        if lease.holder != *holder && lease.is_live(now) {
            return Ok(LeaseOutcome::HeldBy(lease));
        }
    }
    write(tree, session, holder, now)?;
    Ok(LeaseOutcome::Acquired)
}

/// Extends our own lease; never steals another holder's.
pub fn renew(tree: &sled::Tree, session: SessionId, holder: &Holder, now: Millis) -> Result<()> {
    match read(tree, session)? {
        Some(lease) if lease.holder != *holder => Ok(()),
        _ => write(tree, session, holder, now),
    }
}

pub fn release(tree: &sled::Tree, session: SessionId, holder: &Holder) -> Result<()> {
    if let Some(lease) = read(tree, session)? {
        if lease.holder == *holder {
            tree.remove(session.as_bytes())?;
        }
    }
    Ok(())
}

fn write(tree: &sled::Tree, session: SessionId, holder: &Holder, now: Millis) -> Result<()> {
    let lease = Lease {
        holder: *holder,
        expires_at: now.saturating_add(LEASE_TTL_MS),
    };
    tree.insert(session.as_bytes(), encode(&lease)?)?;
    Ok(())
}

/// Milliseconds since boot on `CLOCK_BOOTTIME`, the clock process start times in
/// `/proc/<pid>/stat` count on. Not `/proc/uptime`: container file systems (lxcfs) show the
/// container's own uptime there, which would make every process look younger than it is.
fn since_boot_ms() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (rc == 0 && ts.tv_sec >= 0)
        .then(|| (ts.tv_sec as u64).saturating_mul(1000) + ts.tv_nsec as u64 / 1_000_000)
}

/// The age, at `since_boot_ms`, of a process started `start_ticks` after boot.
fn age_at(since_boot_ms: u64, start_ticks: u64) -> Option<u64> {
    (start_ticks > 0)
        .then(|| since_boot_ms.checked_sub(ticks_to_ms(start_ticks)))
        .flatten()
}

/// Clock ticks (as in `/proc/<pid>/stat`) to milliseconds.
fn ticks_to_ms(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    ticks.saturating_mul(1000) / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test process started after boot and moments ago: a clock in the wrong unit, or
    /// one that is not the start times' own, gives no age or an absurd one.
    #[test]
    fn the_current_process_is_moments_old() {
        let age = Holder::current().age_ms().expect("an age for this process");
        assert!(age < 3_600_000, "this test process is {age} ms old");
        let boot = since_boot_ms().unwrap();
        assert!(boot >= age, "booted {boot} ms ago, process {age} ms old");
    }

    /// A start time unknown (0), or after the time since boot read (a clock that is not the
    /// start times' own), gives no age rather than a wrong one.
    #[test]
    fn an_unknown_or_impossible_start_gives_no_age() {
        let tick = ticks_to_ms(1);
        assert_eq!(age_at(100_000, 0), None, "an unknown start");
        assert_eq!(
            age_at(5_000, 10_000 / tick),
            None,
            "a time since boot below the process's start is no reading"
        );
        assert_eq!(age_at(100_000, 10_000 / tick), Some(90_000));
    }
}
