//! Key naming: every Redis key and channel the backend uses, under the configured prefix (the
//! layout is described in the module overview).

use crate::ports::{Collection, Deadline};

/// Key layout, shared by every part of the backend.
#[derive(Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn entity(&self, coll: Collection, id: &str) -> String {
        format!("{}e:{}:{id}", self.prefix, coll.name())
    }
    pub(super) fn entity_prefix(&self, coll: Collection) -> String {
        format!("{}e:{}:", self.prefix, coll.name())
    }
    pub(super) fn index(&self, coll: Collection, owner: Option<&str>) -> String {
        format!("{}i:{}:{}", self.prefix, coll.name(), owner.unwrap_or("*"))
    }
    pub(super) fn counter(&self, name: &str) -> String {
        format!("{}c:{name}", self.prefix)
    }
    pub(super) fn version(&self, coll: Collection) -> String {
        format!("{}v:{}", self.prefix, coll.name())
    }
    pub(super) fn seq(&self, scope: &str) -> String {
        format!("{}seq:{scope}", self.prefix)
    }
    pub(super) fn journal(&self, scope: &str) -> String {
        format!("{}j:{scope}", self.prefix)
    }
    pub(super) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
    pub(super) fn deadlines(&self, index: Deadline) -> String {
        format!("{}d:{}", self.prefix, index.name())
    }
}
