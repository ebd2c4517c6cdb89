//! The one error type of the IOMMU core.
//!
//! Every variant is one errno, the one Linux returns in the same situation, so a caller that
//! speaks errno (a kernel shim, the iommufd uAPI) converts without a table. Each carries a
//! [`Reason`]: a static message naming what was wrong and, where there is one, the offending
//! value. Errors are `Copy` and never allocate, because some (an empty PASID slot on the fault
//! path) are routine.

use core::fmt;

/// The condition behind an error, for callers that branch on *what* went wrong rather than on
/// the errno alone (one errno covers several conditions: `EBUSY` is both "PASID taken" and
/// "owned by another owner type"). Errors a caller has no reason to tell apart stay
/// [`Condition::Unspecified`]; match with a wildcard arm, the list grows.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Condition {
    /// No condition was named; the errno and message say what happened.
    #[default]
    Unspecified,
    /// The PASID (or the RID) already has an attachment (`EBUSY`).
    PasidInUse,
    /// Nothing is attached at the PASID, or no handle is there (`ENOENT`).
    NoSuchPasid,
    /// The slot is held by an owner of another type (`EBUSY` from a typed lookup).
    WrongOwner,
    /// The PASID is beyond what a device supports (`EINVAL`).
    PasidOutOfRange,
    /// No PASID is free in the requested range (`ENOSPC`).
    PasidSpaceExhausted,
    /// The PASID is bound to another process address space (`EBUSY`).
    PasidBoundToOtherMm,
    /// The mm's PASID does not fit the device's PASID width (`EOVERFLOW`).
    PasidTooWide,
    /// The domain given is not the one attached (`EINVAL`).
    NotAttached,
    /// The domain belongs to another IOMMU instance (`EINVAL`).
    ForeignDomain,
    /// DMA ownership is held by someone else (`EPERM`).
    NotOwner,
    /// The group still has PASID attachments (`EBUSY`).
    GroupHasPasids,
    /// Fault reporting is not enabled on the device (`ENODEV`).
    FaultReportingDisabled,
    /// No handler took a page request (the bad path, `EINVAL`).
    NoFaultHandler,
    /// No object has that ID (`ENOENT`, iommufd).
    NoSuchObject,
    /// The object has another type than the call needs (`ENOENT`/`EINVAL`, iommufd).
    WrongObjectType,
    /// The object is still referenced (`EBUSY`, iommufd).
    ObjectInUse,
    /// The command is not known (`ENOTTY`, iommufd).
    UnknownCommand,
    /// A user record is shorter than its minimum size (`EINVAL`, iommufd).
    RecordTooShort,
    /// A user record carries non-zero bytes beyond what is understood (`E2BIG`, iommufd).
    UnknownTrailingBytes,
    /// A flag or data type is not supported (`EOPNOTSUPP`/`EINVAL`).
    UnsupportedFlags,
}

/// Why a call failed: what was wrong, the value that was wrong when there is one, and the
/// [`Condition`] when a caller may branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason {
    what: &'static str,
    value: Option<u64>,
    condition: Condition,
}

impl Reason {
    /// A reason with no offending value.
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            value: None,
            condition: Condition::Unspecified,
        }
    }

    /// A reason naming the offending value (a PASID, an ID, a count).
    pub const fn with(what: &'static str, value: u64) -> Self {
        Self {
            what,
            value: Some(value),
            condition: Condition::Unspecified,
        }
    }

    /// The same reason, naming its condition.
    pub const fn because(self, condition: Condition) -> Self {
        Self { condition, ..self }
    }

    /// The condition, [`Condition::Unspecified`] when none was named.
    pub const fn condition(&self) -> Condition {
        self.condition
    }

    /// The message, without the value.
    pub const fn what(&self) -> &'static str {
        self.what
    }

    /// The offending value, if the reason names one.
    pub const fn value(&self) -> Option<u64> {
        self.value
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Some(v) => write!(f, "{} ({v})", self.what),
            None => f.write_str(self.what),
        }
    }
}

/// An errno-style error. Variants are sorted by name; each maps 1:1 to the errno in its doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// `EADDRINUSE`: an IOVA range collides with a reserved one.
    #[error("EADDRINUSE: {0}")]
    AddressInUse(Reason),
    /// `EAGAIN`: try again (a non-blocking call found nothing to do).
    #[error("EAGAIN: {0}")]
    Again(Reason),
    /// `EBUSY`: the object is in use (slot occupied, owner type mismatch, still referenced).
    #[error("EBUSY: {0}")]
    Busy(Reason),
    /// `EEXIST`: the object already exists.
    #[error("EEXIST: {0}")]
    Exists(Reason),
    /// `EFAULT`: a caller-provided buffer could not be accessed.
    #[error("EFAULT: {0}")]
    Fault(Reason),
    /// `ESPIPE`: a file offset or a record size the endpoint does not accept.
    #[error("ESPIPE: {0}")]
    IllegalSeek(Reason),
    /// `EINVAL`: an argument is invalid (out of range, wrong kind, not attached as claimed).
    #[error("EINVAL: {0}")]
    InvalidArgument(Reason),
    /// `EIO`: a check on the state of memory failed (the selftest's reference counts).
    #[error("EIO: {0}")]
    Io(Reason),
    /// `EMSGSIZE`: the output did not fit the buffer given; the count needed is reported.
    #[error("EMSGSIZE: {0}")]
    MessageTooLong(Reason),
    /// `ENODEV`: the device is not behind an IOMMU, or lacks a facility the call needs.
    #[error("ENODEV: {0}")]
    NoDevice(Reason),
    /// `ENOENT`: nothing is there (empty PASID slot, unknown object ID).
    #[error("ENOENT: {0}")]
    NoEntry(Reason),
    /// `ENOMEM`: an allocation failed.
    #[error("ENOMEM: {0}")]
    NoMemory(Reason),
    /// `ENOSPC`: an ID space is exhausted (no free PASID).
    #[error("ENOSPC: {0}")]
    NoSpace(Reason),
    /// `ENOTTY`: an unknown command.
    #[error("ENOTTY: {0}")]
    NotTty(Reason),
    /// `EOPNOTSUPP`: the IOMMU or domain does not support the operation.
    #[error("EOPNOTSUPP: {0}")]
    NotSupported(Reason),
    /// `EOVERFLOW`: a value does not fit the device (the mm's PASID is beyond its PASID width).
    #[error("EOVERFLOW: {0}")]
    Overflow(Reason),
    /// `EPERM`: the caller is not the owner (DMA ownership held by someone else).
    #[error("EPERM: {0}")]
    PermissionDenied(Reason),
    /// `EPROBE_DEFER`: a resource the call needs does not exist yet (no default domain).
    #[error("EPROBE_DEFER: {0}")]
    ProbeDefer(Reason),
    /// `E2BIG`: a request carries non-zero bytes beyond what is understood.
    #[error("E2BIG: {0}")]
    TooBig(Reason),
}

/// The errno values used by [`Error`], as Linux defines them on every architecture we model.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory (no such entry).
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Argument list too long.
    pub const E2BIG: i32 = 7;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Inappropriate ioctl for device.
    pub const ENOTTY: i32 = 25;
    /// No space left.
    pub const ENOSPC: i32 = 28;
    /// Illegal seek.
    pub const ESPIPE: i32 = 29;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
    /// Message too long.
    pub const EMSGSIZE: i32 = 90;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Address already in use.
    pub const EADDRINUSE: i32 = 98;
    /// Driver requests probe retry (kernel-internal).
    pub const EPROBE_DEFER: i32 = 517;
}

impl Error {
    /// The positive errno value (`EINVAL` is 22).
    pub const fn errno(&self) -> i32 {
        use errno::*;
        match self {
            Self::AddressInUse(_) => EADDRINUSE,
            Self::Again(_) => EAGAIN,
            Self::Busy(_) => EBUSY,
            Self::Exists(_) => EEXIST,
            Self::Fault(_) => EFAULT,
            Self::IllegalSeek(_) => ESPIPE,
            Self::InvalidArgument(_) => EINVAL,
            Self::Io(_) => EIO,
            Self::MessageTooLong(_) => EMSGSIZE,
            Self::NoDevice(_) => ENODEV,
            Self::NoEntry(_) => ENOENT,
            Self::NoMemory(_) => ENOMEM,
            Self::NoSpace(_) => ENOSPC,
            Self::NotTty(_) => ENOTTY,
            Self::NotSupported(_) => EOPNOTSUPP,
            Self::Overflow(_) => EOVERFLOW,
            Self::PermissionDenied(_) => EPERM,
            Self::ProbeDefer(_) => EPROBE_DEFER,
            Self::TooBig(_) => E2BIG,
        }
    }

    /// The negative errno a kernel function would return (`-22` for `EINVAL`).
    pub const fn to_neg_errno(&self) -> i32 {
        -self.errno()
    }

    /// The errno's symbolic name (`"EINVAL"`).
    pub const fn errno_name(&self) -> &'static str {
        match self {
            Self::AddressInUse(_) => "EADDRINUSE",
            Self::Again(_) => "EAGAIN",
            Self::Busy(_) => "EBUSY",
            Self::Exists(_) => "EEXIST",
            Self::Fault(_) => "EFAULT",
            Self::IllegalSeek(_) => "ESPIPE",
            Self::InvalidArgument(_) => "EINVAL",
            Self::Io(_) => "EIO",
            Self::MessageTooLong(_) => "EMSGSIZE",
            Self::NoDevice(_) => "ENODEV",
            Self::NoEntry(_) => "ENOENT",
            Self::NoMemory(_) => "ENOMEM",
            Self::NoSpace(_) => "ENOSPC",
            Self::NotTty(_) => "ENOTTY",
            Self::NotSupported(_) => "EOPNOTSUPP",
            Self::Overflow(_) => "EOVERFLOW",
            Self::PermissionDenied(_) => "EPERM",
            Self::ProbeDefer(_) => "EPROBE_DEFER",
            Self::TooBig(_) => "E2BIG",
        }
    }

    /// The condition behind the error, for callers that branch on it.
    pub const fn condition(&self) -> Condition {
        self.reason().condition()
    }

    /// The same error, naming its condition (`ebusy("...").because(Condition::PasidInUse)`).
    pub const fn because(self, condition: Condition) -> Self {
        match self {
            Self::AddressInUse(r) => Self::AddressInUse(r.because(condition)),
            Self::Again(r) => Self::Again(r.because(condition)),
            Self::Busy(r) => Self::Busy(r.because(condition)),
            Self::Exists(r) => Self::Exists(r.because(condition)),
            Self::Fault(r) => Self::Fault(r.because(condition)),
            Self::IllegalSeek(r) => Self::IllegalSeek(r.because(condition)),
            Self::InvalidArgument(r) => Self::InvalidArgument(r.because(condition)),
            Self::Io(r) => Self::Io(r.because(condition)),
            Self::MessageTooLong(r) => Self::MessageTooLong(r.because(condition)),
            Self::NoDevice(r) => Self::NoDevice(r.because(condition)),
            Self::NoEntry(r) => Self::NoEntry(r.because(condition)),
            Self::NoMemory(r) => Self::NoMemory(r.because(condition)),
            Self::NoSpace(r) => Self::NoSpace(r.because(condition)),
            Self::NotTty(r) => Self::NotTty(r.because(condition)),
            Self::NotSupported(r) => Self::NotSupported(r.because(condition)),
            Self::Overflow(r) => Self::Overflow(r.because(condition)),
            Self::PermissionDenied(r) => Self::PermissionDenied(r.because(condition)),
            Self::ProbeDefer(r) => Self::ProbeDefer(r.because(condition)),
            Self::TooBig(r) => Self::TooBig(r.because(condition)),
        }
    }

    /// Why the call failed.
    pub const fn reason(&self) -> &Reason {
        match self {
            Self::AddressInUse(r)
            | Self::Again(r)
            | Self::Busy(r)
            | Self::Exists(r)
            | Self::Fault(r)
            | Self::IllegalSeek(r)
            | Self::InvalidArgument(r)
            | Self::Io(r)
            | Self::MessageTooLong(r)
            | Self::NoDevice(r)
            | Self::NoEntry(r)
            | Self::NoMemory(r)
            | Self::NoSpace(r)
            | Self::NotTty(r)
            | Self::NotSupported(r)
            | Self::Overflow(r)
            | Self::PermissionDenied(r)
            | Self::ProbeDefer(r)
            | Self::TooBig(r) => r,
        }
    }
}

/// The result type of the core.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Shorthand constructors used throughout the crate: `einval("...")`, `ebusy_v("...", pasid)`.
macro_rules! errors {
    ($($plain:ident, $valued:ident => $variant:ident;)*) => {$(
        #[doc = concat!("An [`Error::", stringify!($variant), "`] with a message.")]
        pub const fn $plain(what: &'static str) -> Error {
            Error::$variant(Reason::new(what))
        }
        #[doc = concat!("An [`Error::", stringify!($variant), "`] naming the offending value.")]
        pub const fn $valued(what: &'static str, value: u64) -> Error {
            Error::$variant(Reason::with(what, value))
        }
    )*};
}

errors! {
    eaddrinuse, eaddrinuse_v => AddressInUse;
    eagain, eagain_v => Again;
    ebusy, ebusy_v => Busy;
    eexist, eexist_v => Exists;
    efault, efault_v => Fault;
    espipe, espipe_v => IllegalSeek;
    einval, einval_v => InvalidArgument;
    eio, eio_v => Io;
    emsgsize, emsgsize_v => MessageTooLong;
    enodev, enodev_v => NoDevice;
    enoent, enoent_v => NoEntry;
    enomem, enomem_v => NoMemory;
    enospc, enospc_v => NoSpace;
    enotty, enotty_v => NotTty;
    eopnotsupp, eopnotsupp_v => NotSupported;
    eoverflow, eoverflow_v => Overflow;
    eperm, eperm_v => PermissionDenied;
    eprobe_defer, eprobe_defer_v => ProbeDefer;
    e2big, e2big_v => TooBig;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_linux_errno() {
        let cases = [
            (eaddrinuse("x"), 98, "EADDRINUSE"),
            (eagain("x"), 11, "EAGAIN"),
            (eio("x"), 5, "EIO"),
            (emsgsize("x"), 90, "EMSGSIZE"),
            (ebusy("x"), 16, "EBUSY"),
            (eexist("x"), 17, "EEXIST"),
            (efault("x"), 14, "EFAULT"),
            (espipe("x"), 29, "ESPIPE"),
            (einval("x"), 22, "EINVAL"),
            (enodev("x"), 19, "ENODEV"),
            (enoent("x"), 2, "ENOENT"),
            (enomem("x"), 12, "ENOMEM"),
            (enospc("x"), 28, "ENOSPC"),
            (enotty("x"), 25, "ENOTTY"),
            (eopnotsupp("x"), 95, "EOPNOTSUPP"),
            (eoverflow("x"), 75, "EOVERFLOW"),
            (eperm("x"), 1, "EPERM"),
            (eprobe_defer("x"), 517, "EPROBE_DEFER"),
            (e2big("x"), 7, "E2BIG"),
        ];
        for (err, num, name) in cases {
            assert_eq!(
                (err.errno(), err.to_neg_errno(), err.errno_name()),
                (num, -num, name)
            );
        }
    }

    #[test]
    fn message_names_the_value() {
        let e = einval_v("pasid beyond a group member's max_pasids", 4096);
        assert_eq!(
            alloc::format!("{e}"),
            "EINVAL: pasid beyond a group member's max_pasids (4096)"
        );
        assert_eq!(e.reason().value(), Some(4096));
    }

    #[test]
    fn condition_is_kept_beside_the_errno_and_message() {
        let plain = ebusy_v("PASID already attached", 7);
        assert_eq!(plain.condition(), Condition::Unspecified);
        let e = plain.because(Condition::PasidInUse);
        assert_eq!(e.condition(), Condition::PasidInUse);
        assert_eq!((e.errno(), e.reason().value()), (16, Some(7)));
        assert_eq!(alloc::format!("{e}"), alloc::format!("{plain}"));
    }
}
