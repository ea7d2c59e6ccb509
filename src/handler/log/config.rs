//! The `[[handlers]]` table of `type = "log"`: its keys and their
//! defaults. Pure; below the handlers, with the configuration (layer 2),
//! which names it in [`crate::config::HandlerConfig`].

use crate::config::handler_table::HandlerTable;
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use schemars::JsonSchema;
use serde::Deserialize;

/// `type = "log"`: one structured log record per event.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogHandlerConfig {
    /// Name used in logs; default `log#<index>`.
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    pub events: EventFilter,
}

impl Default for LogHandlerConfig {
    fn default() -> Self {
        Self {
            name: None,
            events: EventFilter::all(),
        }
    }
}

impl HandlerTable for LogHandlerConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn events(&self) -> &EventFilter {
        &self.events
    }
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
