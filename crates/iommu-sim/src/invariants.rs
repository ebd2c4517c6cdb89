//! The run-time invariant checker (DESIGN §4): every event of a run passes through it, and a
//! violation is reported with the event that caused it.
//!
//! | invariant | violated by |
//! |---|---|
//! | exactly one response per page request group | a response to a group that is not outstanding (a second response, or one never asked for) other than one the core announced on its bad path or one late answer to a group its device abandoned, or a group still unanswered at the end |
//! | no delivery after detach | a handler receiving a group for an attachment whose detach returned |
//! | no DMA through a PASID after its unbind | a DMA translated through (device, PASID) after unbind returned and before a new bind |
//! | no PASID reuse while outstanding | a PASID allocated while still live, or while groups for it are unanswered |
//! | every DMA job's data verified | a job whose data read back differs |
//! | every group accounted for | groups sent ≠ answered by a handler + auto-answered + answered by the IOMMU + abandoned, a response no responder traced, or the trace's figures differ from the devices' own counters (checked at the end of a run, [`crate::report::GroupLedger`]) |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Something that happened in a run, as the checker needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device sent the last request of a group: a response is now owed.
    GroupRequested {
        /// Device identity.
        dev: u64,
        /// PASID, if the request carried one.
        pasid: Option<u32>,
        /// PRG index.
        grpid: u32,
    },
    /// A page response reached the device.
    Responded {
        /// Device identity.
        dev: u64,
        /// PRG index.
        grpid: u32,
        /// Response code (0 Success, 1 Invalid, 2 Failure).
        code: u32,
    },
    /// A fault handler received a group routed to an attachment.
    Delivered {
        /// The attachment's identity (its handle address).
        attachment: usize,
        /// Device identity.
        dev: u64,
        /// PRG index.
        grpid: u32,
    },
    /// An attachment was published (a new handle; a handle's address may be reused after its
    /// detach, so this starts its life afresh).
    Attached {
        /// The attachment's identity.
        attachment: usize,
    },
    /// The core answered a request on its "bad" path (no fault-capable attachment took it).
    /// Linux answers every such request, partial ones too, so a device may receive more than
    /// one response for a group whose attachment went away: each one announced here is
    /// expected, not a second answer.
    BadPathResponse {
        /// Device identity.
        dev: u64,
        /// PRG index.
        grpid: u32,
    },
    /// The device gave up a group without consuming its response (reset, timeout): a
    /// response may still arrive late, once.
    Abandoned {
        /// Device identity.
        dev: u64,
        /// PRG index.
        grpid: u32,
    },
    /// Detach (or replace, or unbind) of an attachment returned.
    DetachReturned {
        /// The attachment's identity.
        attachment: usize,
    },
    /// A device was bound to a PASID (SVA bind returned).
    Bound {
        /// Device identity.
        dev: u64,
        /// PASID.
        pasid: u32,
    },
    /// An unbind of (device, PASID) returned.
    UnbindReturned {
        /// Device identity.
        dev: u64,
        /// PASID.
        pasid: u32,
    },
    /// A DMA access was translated through (device, PASID).
    Dma {
        /// Device identity.
        dev: u64,
        /// PASID.
        pasid: u32,
    },
    /// A PASID was allocated.
    PasidAllocated {
        /// PASID.
        pasid: u32,
    },
    /// A PASID was freed.
    PasidFreed {
        /// PASID.
        pasid: u32,
    },
    /// A DMA job's data was read back and compared.
    JobVerified {
        /// The job's name.
        job: String,
        /// Bytes that differed from what the job should have produced.
        mismatched_bytes: u64,
    },
}

/// The invariants checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// Exactly one response per page request group.
    ExactlyOneResponse,
    /// No delivery after detach returned.
    NoDeliveryAfterDetach,
    /// No DMA through a PASID after its unbind returned.
    NoDmaAfterUnbind,
    /// No PASID reuse while anything for it is outstanding.
    NoPasidReuse,
    /// Every DMA job's data verified.
    DataVerified,
    /// Every page request group sent is accounted for, and the accounts agree with the
    /// devices' counters.
    EveryGroupAccounted,
}

impl Invariant {
    /// All invariants, in report order.
    pub const ALL: [Invariant; 6] = [
        Self::ExactlyOneResponse,
        Self::NoDeliveryAfterDetach,
        Self::NoDmaAfterUnbind,
        Self::NoPasidReuse,
        Self::DataVerified,
        Self::EveryGroupAccounted,
    ];

    /// The snake_case name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::ExactlyOneResponse => "exactly_one_response",
            Self::NoDeliveryAfterDetach => "no_delivery_after_detach",
            Self::NoDmaAfterUnbind => "no_dma_after_unbind",
            Self::NoPasidReuse => "no_pasid_reuse",
            Self::DataVerified => "data_verified",
            Self::EveryGroupAccounted => "every_group_accounted",
        }
    }
}

/// One violation: which invariant, the event's position in the run, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant broken.
    pub invariant: Invariant,
    /// Index of the offending event in the run (`None`: found at the end of the run).
    pub event_index: Option<u64>,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.event_index {
            Some(i) => write!(
                f,
                "{} violated at event #{i}: {}",
                self.invariant.name(),
                self.message
            ),
            None => write!(
                f,
                "{} violated at the end of the run: {}",
                self.invariant.name(),
                self.message
            ),
        }
    }
}

/// Checks a run's events as they happen.
#[derive(Debug, Default)]
pub struct Checker {
    events: u64,
    outstanding: BTreeMap<(u64, u32), Option<u32>>,
    /// Responses the core announced on its bad path, not yet seen at the device.
    bad_path: BTreeMap<(u64, u32), u64>,
    /// Groups abandoned by their device: one late response each is expected.
    abandoned: BTreeMap<(u64, u32), u64>,
    detached: BTreeSet<usize>,
    unbound: BTreeSet<(u64, u32)>,
    live_pasids: BTreeSet<u32>,
    counts: BTreeMap<Invariant, u64>,
    violations: Vec<Violation>,
}

/// How many violations are kept verbatim (all are counted).
const KEEP: usize = 64;

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn violate(&mut self, invariant: Invariant, message: String) {
        *self.counts.entry(invariant).or_default() += 1;
        if self.violations.len() < KEEP {
            self.violations.push(Violation {
                invariant,
                event_index: Some(self.events),
                message,
            });
        }
    }

    /// Checks one event; returns whether it broke an invariant.
    pub fn observe(&mut self, e: &Event) -> bool {
        let before = self.violations_total();
        match e {
            Event::GroupRequested { dev, pasid, grpid } => {
                self.group_requested(e, (*dev, *grpid), *pasid);
            }
            Event::Responded { dev, grpid, code } => self.responded(e, (*dev, *grpid), *code),
            Event::Delivered { attachment, .. } => {
                if self.detached.contains(attachment) {
                    self.violate(
                        Invariant::NoDeliveryAfterDetach,
                        format!("group delivered to attachment {attachment:#x} after its detach returned: {e:?}"),
                    );
                }
            }
            Event::Attached { attachment } => {
                self.detached.remove(attachment);
            }
            Event::BadPathResponse { dev, grpid } => {
                *self.bad_path.entry((*dev, *grpid)).or_default() += 1;
            }
            Event::Abandoned { dev, grpid } => {
                if self.outstanding.remove(&(*dev, *grpid)).is_some() {
                    *self.abandoned.entry((*dev, *grpid)).or_default() += 1;
                }
            }
            Event::DetachReturned { attachment } => {
                self.detached.insert(*attachment);
            }
            Event::Bound { dev, pasid } => {
                self.unbound.remove(&(*dev, *pasid));
            }
            Event::UnbindReturned { dev, pasid } => {
                self.unbound.insert((*dev, *pasid));
            }
            Event::Dma { dev, pasid } => self.dma(e, *dev, *pasid),
            Event::PasidAllocated { pasid } => self.pasid_allocated(e, *pasid),
            Event::PasidFreed { pasid } => {
                self.live_pasids.remove(pasid);
            }
            Event::JobVerified {
                job,
                mismatched_bytes,
            } => {
                if *mismatched_bytes > 0 {
                    self.violate(
                        Invariant::DataVerified,
                        format!("job '{job}' read back {mismatched_bytes} wrong bytes: {e:?}"),
                    );
                }
            }
        }
        self.events += 1;
        self.violations_total() > before
    }

    /// A device sent group `key` (device, PRG index): its index must not be in use.
    fn group_requested(&mut self, e: &Event, key: (u64, u32), pasid: Option<u32>) {
        let (dev, grpid) = key;
        if self.outstanding.insert(key, pasid).is_some() {
            self.violate(
                Invariant::ExactlyOneResponse,
                format!(
                    "device {dev} reused PRG index {grpid} while its group was unanswered: {e:?}"
                ),
            );
        }
    }

    /// A response reached group `key`'s device: the group must be unanswered, or the response
    /// one the core announced on its bad path, or the one late answer of an abandoned group.
    fn responded(&mut self, e: &Event, key: (u64, u32), code: u32) {
        let (dev, grpid) = key;
        let announced = take_one(&mut self.bad_path, key);
        if self.outstanding.remove(&key).is_none()
            && !announced
            && !take_one(&mut self.abandoned, key)
        {
            self.violate(
                Invariant::ExactlyOneResponse,
                format!("response (code {code}) to device {dev} PRG {grpid} that had no unanswered group: {e:?}"),
            );
        }
    }

    /// A device DMAed through a PASID: its unbind must not have returned.
    fn dma(&mut self, e: &Event, dev: u64, pasid: u32) {
        if self.unbound.contains(&(dev, pasid)) {
            self.violate(
                Invariant::NoDmaAfterUnbind,
                format!("device {dev} DMA through PASID {pasid} after its unbind returned: {e:?}"),
            );
        }
    }

    /// A PASID was allocated: it must not be live, nor have groups still unanswered.
    fn pasid_allocated(&mut self, e: &Event, pasid: u32) {
        let pending = self
            .outstanding
            .values()
            .filter(|p| **p == Some(pasid))
            .count();
        if !self.live_pasids.insert(pasid) || pending > 0 {
            self.violate(
                Invariant::NoPasidReuse,
                format!("PASID {pasid} allocated while still live or with {pending} groups unanswered: {e:?}"),
            );
        }
    }

    fn violations_total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Ends the run: groups still unanswered are violations.
    pub fn finish(mut self) -> CheckReport {
        let left: Vec<_> = std::mem::take(&mut self.outstanding).into_iter().collect();
        let never_answered = left.len() as u64;
        for ((dev, grpid), pasid) in left {
            *self
                .counts
                .entry(Invariant::ExactlyOneResponse)
                .or_default() += 1;
            if self.violations.len() < KEEP {
                self.violations.push(Violation {
                    invariant: Invariant::ExactlyOneResponse,
                    event_index: None,
                    message: format!("device {dev} PRG {grpid} (PASID {pasid:?}) never answered"),
                });
            }
        }
        CheckReport {
            events: self.events,
            counts: Invariant::ALL
                .iter()
                .map(|i| (*i, self.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            violations: self.violations,
            never_answered,
        }
    }
}

/// Takes one count from `map[key]`; whether there was one.
fn take_one(map: &mut BTreeMap<(u64, u32), u64>, key: (u64, u32)) -> bool {
    match map.get_mut(&key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            map.remove(&key);
            true
        }
        None => false,
    }
}

/// The outcome of a run's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Events checked.
    pub events: u64,
    /// Violations per invariant, every invariant listed.
    pub counts: Vec<(Invariant, u64)>,
    /// The first violations, verbatim.
    pub violations: Vec<Violation>,
    /// Groups still unanswered when the run ended (counted under `exactly_one_response`).
    pub never_answered: u64,
}

impl CheckReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.counts.iter().all(|(_, n)| *n == 0)
    }

    /// Violations of one invariant.
    pub fn count(&self, invariant: Invariant) -> u64 {
        self.counts
            .iter()
            .find(|(i, _)| *i == invariant)
            .map_or(0, |(_, n)| *n)
    }
}
