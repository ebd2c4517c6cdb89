//! Attach handles: the record of *who* attached a domain to a (group, PASID) slot.
//!
//! Linux lends the core a bare `{domain}` struct embedded in the owner's own struct and recovers
//! the owner with container-of, guarded by a type check done under the xarray lock (SPEC §1.4,
//! H1). Here the owner's data `T` lives *inside* the handle, [`AttachHandle<T>`], created by the
//! core from a value the owner gives up at attach time. Consequences, all by construction:
//!
//! * a fresh handle per attachment (H5): attach and replace take `T` by value and make a new
//!   `Arc`, so re-installing an old handle cannot even be written;
//! * typed lookup ([`crate::attach_handle_get`]) compares the stored type with `T` under the
//!   array lock and hands out a counted reference: a racing detach can unpublish the handle but
//!   never free it under the reader (the use-after-free of the seed thread is not expressible);
//! * identity is the `Arc`'s address, which is what auto-response matches on.

use alloc::sync::Arc;
use core::any::{type_name, Any};
use core::fmt;
use core::ops::Deref;

use crate::domain::Domain;

/// A domain attached to a (group, PASID) slot, with the owner's data `T`.
///
/// Dereferences to `T`. Held as `Arc<AttachHandle<T>>`: by the slot while attached, and by
/// whoever looked it up (a fault group, an SVA bond) for as long as they need it.
pub struct AttachHandle<T> {
    domain: Arc<Domain>,
    pasid: u32,
    data: T,
}

impl<T> AttachHandle<T> {
    pub(crate) fn new(domain: Arc<Domain>, pasid: u32, data: T) -> Self {
        Self {
            domain,
            pasid,
            data,
        }
    }

    /// The attached domain.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }

    /// The PASID of the slot (`IOMMU_NO_PASID` for a group/RID attachment).
    pub fn pasid(&self) -> u32 {
        self.pasid
    }

    /// The owner's data.
    pub fn data(&self) -> &T {
        &self.data
    }
}

impl<T> Deref for AttachHandle<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

/// Shows where the handle is attached and its owner type, not the owner's data (which need not
/// be `Debug`, and may be private to its owner).
impl<T> fmt::Debug for AttachHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachHandle")
            .field("domain", &self.domain.id())
            .field("pasid", &self.pasid)
            .field("owner", &type_name::<T>())
            .finish()
    }
}

/// The type-erased face of a handle, as the PASID array stores it.
pub(crate) trait ErasedHandle: Any + Send + Sync {
    fn domain(&self) -> &Arc<Domain>;
    fn pasid(&self) -> u32;
    fn owner_type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Send + Sync + 'static> ErasedHandle for AttachHandle<T> {
    fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }
    fn pasid(&self) -> u32 {
        self.pasid
    }
    fn owner_type_name(&self) -> &'static str {
        type_name::<T>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// An attach handle of unknown owner type: what the fault path and detach/replace return.
///
/// Holding one keeps the handle and its domain alive; it grants no access to the owner's data
/// until [`Attachment::downcast`] proves the type.
#[derive(Clone)]
pub struct Attachment(pub(crate) Arc<dyn ErasedHandle>);

impl Attachment {
    /// The attached domain.
    pub fn domain(&self) -> &Arc<Domain> {
        self.0.domain()
    }

    /// The PASID of the slot.
    pub fn pasid(&self) -> u32 {
        self.0.pasid()
    }

    /// The owner type's name, for messages.
    pub fn owner_type_name(&self) -> &'static str {
        self.0.owner_type_name()
    }

    /// Whether the owner's data is a `T`.
    pub fn is<T: Send + Sync + 'static>(&self) -> bool {
        self.0.as_any().is::<AttachHandle<T>>()
    }

    /// The typed handle, or `self` back when the owner type is not `T`.
    pub fn downcast<T: Send + Sync + 'static>(self) -> Result<Arc<AttachHandle<T>>, Self> {
        if self.is::<T>() {
            Ok(self
                .0
                .into_any()
                .downcast::<AttachHandle<T>>()
                .unwrap_or_else(|_| unreachable!("type checked just above")))
        } else {
            Err(self)
        }
    }

    /// Whether both refer to the same attachment (handle identity).
    pub fn ptr_eq(&self, other: &Attachment) -> bool {
        core::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }

    /// Whether this is the attachment `handle` stands for.
    pub fn is_handle<T: Send + Sync + 'static>(&self, handle: &Arc<AttachHandle<T>>) -> bool {
        core::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(handle))
    }

    /// The handle's address: a stable identity while anything holds the handle.
    pub fn addr(&self) -> usize {
        crate::group::slot_addr(&self.0)
    }
}

impl<T: Send + Sync + 'static> From<Arc<AttachHandle<T>>> for Attachment {
    fn from(h: Arc<AttachHandle<T>>) -> Self {
        Attachment(h)
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("domain", &self.domain().id())
            .field("pasid", &self.pasid())
            .field("owner", &self.owner_type_name())
            .finish()
    }
}
