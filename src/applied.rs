//! What of a run's operations reached the store: the one word the store reports and
//! the state DB records, so that neither module imports the other.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    All,
    Nothing,
    /// The operations of these learners (external ids) and no others.
    Only(BTreeSet<String>),
}
