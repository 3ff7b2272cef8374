//! argon2id: hashing for `hash-password`, verification off the proxy's event loop.
//!
//! Verification runs on its own threads, half the core count (19 MiB per hash), at the lowest
//! scheduling priority (`SCHED_IDLE`): a login storm takes only the CPU that proxying leaves idle,
//! so proxied latency holds while logins queue. At most 16 callers per core wait; the rest get
//! `Busy` at once (503), since an unbounded queue would be an out-of-memory attack. Unknown
//! and disabled users are checked against a dummy hash with the same parameters, so every
//! failure costs the same.

use argon2::password_hash::{PasswordHasher, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

type Job = Box<dyn FnOnce() + Send>;

/// Longest password accepted (bytes); longer ones are refused before hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// OWASP's argon2id parameters: m=19 MiB, t=2, p=1.
pub fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters"),
    )
}

/// A PHC string for `password` (fresh random salt).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing")
        .to_string()
}

/// Result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Match,
    NoMatch,
    /// Too many verifications in flight: answer 503 instead of queueing.
    Busy,
}

pub struct PasswordService {
    jobs: mpsc::Sender<Job>,
    /// Kernel thread ids of the hashing threads (the priority test reads them).
    #[cfg_attr(not(test), allow(dead_code))]
    worker_tids: Vec<libc::pid_t>,
    admit: Arc<Semaphore>,
    dummy: String,
}

fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Move the calling thread to Linux's `SCHED_IDLE` class: any proxy thread that wakes up
/// preempts it at once, and a core running only it counts as idle when the kernel places
/// woken threads. It still gets a small share of a saturated machine, so logins slow down
/// but do not stop. Falls back to nice 19 (both are per thread on Linux).
fn lowest_priority() -> std::io::Result<()> {
    // SAFETY: plain syscalls on the calling thread's own id with a valid parameter struct.
    let rc = unsafe {
        let tid = current_tid();
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0 {
            0
        } else {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `n` hashing threads taking jobs from one queue; they end when the sender is dropped.
/// Returns once every thread runs at its lowest priority, with their thread ids.
fn spawn_workers(n: usize) -> (mpsc::Sender<Job>, Vec<libc::pid_t>) {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let (ready_tx, ready) = mpsc::channel::<libc::pid_t>();
    for _ in 0..n {
        let rx = rx.clone();
        let ready_tx = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("argon2".into())
            .spawn(move || {
                if let Err(e) = lowest_priority() {
                    tracing::warn!(target: "portcullis::auth", error = %e, "cannot lower the password hashing priority");
                }
                let _ = ready_tx.send(current_tid());
                drop(ready_tx);
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(target: "portcullis::auth", error = %e, "cannot start a password hashing thread");
        }
    }
    drop(ready_tx);
    // Ends when every started thread has reported (or, having died, dropped its sender).
    let tids = ready.iter().collect();
    (tx, tids)
}

impl PasswordService {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // Half the cores at most: a login storm must leave the proxy CPU to serve with.
        let workers = (cores / 2).max(1);
        let mut random = [0u8; 24];
        rand::fill(&mut random);
        let (jobs, worker_tids) = spawn_workers(workers);
        PasswordService {
            jobs,
            worker_tids,
            admit: Arc::new(Semaphore::new(cores * 16)),
            dummy: hash_password(&String::from_utf8_lossy(&random)),
        }
    }

    /// Verify `password` against `hash` (or the dummy hash when `None`).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Check {
        let Ok(_admitted) = self.admit.clone().try_acquire_owned() else {
            return Check::Busy;
        };
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let ok = PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false);
            let _ = done.send(ok);
        });
        if self.jobs.send(job).is_err() {
            return Check::Busy;
        }
        // A worker that died mid-job drops `done`: that is a failed check, never a match.
        let ok = result.await.unwrap_or(false);
        if ok && real {
            Check::Match
        } else {
            Check::NoMatch
        }
    }
}

impl Default for PasswordService {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let s = PasswordService::new();
        assert_eq!(
            s.verify("correct horse".into(), Some(h.clone())).await,
            Check::Match
        );
        assert_eq!(s.verify("wrong".into(), Some(h)).await, Check::NoMatch);
        assert_eq!(
            s.verify("anything".into(), None).await,
            Check::NoMatch,
            "the dummy never matches"
        );
    }

    /// The storm defence: hashing threads exist and run in the idle scheduling class.
    #[test]
    fn hashing_threads_run_at_the_lowest_priority() {
        let s = PasswordService::new();
        assert!(!s.worker_tids.is_empty(), "no hashing threads");
        for tid in &s.worker_tids {
            let dir = format!("/proc/self/task/{tid}");
            let comm = std::fs::read_to_string(format!("{dir}/comm")).unwrap();
            assert_eq!(comm.trim(), "argon2");
            // Field 41 of stat is the scheduling policy; the name (field 2) has no spaces here.
            let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap();
            let policy: i32 = stat.split_whitespace().nth(40).unwrap().parse().unwrap();
            assert_eq!(policy, libc::SCHED_IDLE, "{dir}");
        }
    }
}
