//! A user's second factor as stored, and the changes made to it. The change rules live here
//! once; each backend applies them atomically (sled on its one writer thread, Redis with a
//! compare-and-set script), so a code is accepted at most once across every instance.

use serde::{Deserialize, Serialize};

/// What the store keeps of a user's second factor. Secrets are sealed (AEAD) by the caller:
/// the store never sees one in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaRecord {
    /// The confirmed TOTP secret, sealed; `None` until a code confirmed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A secret shown on the enrolment page and not yet confirmed by a code, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// Unix time the secret was confirmed (0 while there is none).
    #[serde(default)]
    pub enrolled_at: u64,
    /// The newest time step a code was accepted for: that step and older ones are refused,
    /// so a code works once.
    #[serde(default)]
    pub last_step: u64,
    /// Hashes of the recovery codes not used yet.
    #[serde(default)]
    pub recovery: Vec<String>,
}

impl MfaRecord {
    /// Whether a confirmed secret exists.
    pub fn enrolled(&self) -> bool {
        self.secret.is_some()
    }
}

/// One change to a user's second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaChange {
    /// Keep `sealed` as the secret being enrolled (replacing an earlier pending one; a
    /// confirmed secret stays in force until the new one is confirmed).
    Begin { sealed: String },
    /// The pending secret, if it is still `sealed`, is confirmed: `secret` (the same secret,
    /// sealed for every later use) becomes the secret, a code of time step `step` confirmed
    /// it at unix time `at`, and `recovery` replaces the recovery-code hashes.
    Confirm {
        sealed: String,
        secret: String,
        step: u64,
        recovery: Vec<String>,
        at: u64,
    },
    /// A code of time step `step` of the confirmed secret: accepted only when newer than
    /// every step accepted before.
    Step(u64),
    /// A recovery code by hash: accepted once.
    Recovery(String),
    /// Forget the second factor (removal, or an administrator's reset).
    Remove,
}

impl MfaChange {
    /// The record after this change, and whether the change was accepted. A refused change
    /// leaves the record as it was.
    pub fn apply(&self, record: Option<MfaRecord>) -> (Option<MfaRecord>, bool) {
        match self {
            MfaChange::Begin { sealed } => {
                let mut r = record.unwrap_or_default();
                r.pending = Some(sealed.clone());
                (Some(r), true)
            }
            MfaChange::Confirm {
                sealed,
                secret,
                step,
                recovery,
                at,
            } => match record {
                Some(mut r) if r.pending.as_deref() == Some(sealed.as_str()) => {
                    r.pending = None;
                    r.secret = Some(secret.clone());
                    r.enrolled_at = *at;
                    r.last_step = r.last_step.max(*step);
                    r.recovery = recovery.clone();
                    (Some(r), true)
                }
                other => (other, false),
            },
            MfaChange::Step(step) => match record {
                Some(mut r) if r.enrolled() && *step > r.last_step => {
                    r.last_step = *step;
                    (Some(r), true)
                }
                other => (other, false),
            },
            MfaChange::Recovery(hash) => match record {
                Some(mut r) if r.enrolled() && r.recovery.iter().any(|h| h == hash) => {
                    r.recovery.retain(|h| h != hash);
                    (Some(r), true)
                }
                other => (other, false),
            },
            MfaChange::Remove => (None, record.is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled() -> MfaRecord {
        let (r, ok) = MfaChange::Confirm {
            sealed: "s1".into(),
            secret: "s1".into(),
            step: 100,
            recovery: vec!["h1".into(), "h2".into()],
            at: 3000,
        }
        .apply(
            MfaChange::Begin {
                sealed: "s1".into(),
            }
            .apply(None)
            .0,
        );
        assert!(ok);
        r.unwrap()
    }

    #[test]
    fn a_step_is_accepted_once_and_never_an_older_one() {
        let r = enrolled();
        assert_eq!(r.secret.as_deref(), Some("s1"));
        assert_eq!(r.pending, None);
        let (r, ok) = MfaChange::Step(100).apply(Some(r));
        assert!(!ok, "the confirming step is used");
        let (r, ok) = MfaChange::Step(101).apply(r);
        assert!(ok);
        let (r, ok) = MfaChange::Step(101).apply(r);
        assert!(!ok, "replay");
        let (r, ok) = MfaChange::Step(99).apply(r);
        assert!(!ok, "older");
        assert_eq!(r.unwrap().last_step, 101);
    }

    #[test]
    fn recovery_codes_work_once() {
        let (r, ok) = MfaChange::Recovery("h2".into()).apply(Some(enrolled()));
        assert!(ok);
        let (r, ok) = MfaChange::Recovery("h2".into()).apply(r);
        assert!(!ok);
        assert_eq!(r.unwrap().recovery, vec!["h1".to_string()]);
    }

    #[test]
    fn only_the_pending_secret_shown_can_be_confirmed() {
        let r = enrolled();
        let (r, _) = MfaChange::Begin {
            sealed: "s2".into(),
        }
        .apply(Some(r));
        let r = r.unwrap();
        assert_eq!(r.secret.as_deref(), Some("s1"), "still in force");
        let stale = MfaChange::Confirm {
            sealed: "s0".into(),
            secret: "s0".into(),
            step: 200,
            recovery: vec![],
            at: 6000,
        };
        let (r, ok) = stale.apply(Some(r));
        assert!(!ok);
        assert_eq!(r.unwrap().secret.as_deref(), Some("s1"));
        assert_eq!(MfaChange::Step(5).apply(None), (None, false));
        assert_eq!(MfaChange::Remove.apply(None), (None, false));
        assert_eq!(MfaChange::Remove.apply(Some(enrolled())), (None, true));
    }
}
