//! A refusal: why the index refuses a request, as the error reply the client gets (its
//! connection left open). Handlers (`handler.rs`) return one; a store's error becomes one.

use tracing::warn;

use super::store::StoreError;
use crate::protocol::ErrorCode;

/// Why the index refuses a request: the error reply it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The kind of refusal.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
}

impl Reject {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Reject {
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> Self {
        Reject::new(ErrorCode::BadRequest, message)
    }
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotOwner => Reject::new(ErrorCode::NotRegistered, e.to_string()),
            StoreError::Database(_) => {
                warn!("{e}");
                Reject::new(
                    ErrorCode::Internal,
                    "database unavailable: the index cannot use its database right now; try again shortly",
                )
            }
        }
    }
}
