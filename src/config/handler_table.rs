//! What every `[[handlers]]` table has, whatever its type: the
//! [`HandlerTable`] trait each handler's configuration implements (its
//! `name`, its `events` and its validation), and the small types and
//! defaults they share. Below [`super::handlers`] and every handler's
//! `config` module, which all import it.

use super::issues::Issues;
use crate::filter::EventFilter;
use std::collections::BTreeMap;

/// A map of string to string as given in config (`env = { K = "v" }`).
pub type StringMap = BTreeMap<String, String>;

/// What every handler table has.
pub trait HandlerTable {
    /// `name`, when set.
    fn name(&self) -> Option<&str>;
    /// `events`, parsed.
    fn events(&self) -> &EventFilter;
    /// Semantic rules beyond the types; `path` is the table's key path.
    fn validate(&self, path: &str, issues: &mut Issues);
}

/// `events` when a table does not set it: every event.
pub fn all_events() -> EventFilter {
    EventFilter::all()
}
