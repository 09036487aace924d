//! Orderings: the UI's display order of a project's tasks or sessions.
//!
//! One record per (entity type, project), stored under the key `<entityType>:<projectId>` and
//! owned by the project. The ids inside are not checked against existing entities (as
//! upstream): the UI skips the ones it does not know. Like upstream, saving an ordering emits
//! no event.

use maestro_protocol::{ORDERING_ENTITY_TYPES, Ordering, UpdateOrdering};

use super::{Domain, check_enum, check_id};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, TxnExt, transact};
use crate::util::now_ms;

/// Storage key of one ordering.
fn key(entity_type: &str, project_id: &str) -> String {
    format!("{entity_type}:{project_id}")
}

fn check_target(entity_type: &str, project_id: &str) -> Result<()> {
    check_enum("entityType", entity_type, ORDERING_ENTITY_TYPES)?;
    check_id("projectId", project_id)
}

impl Domain {
    /// The saved ordering, or an empty one with `updatedAt: 0` if none was saved.
    pub fn get_ordering(&self, entity_type: &str, project_id: &str) -> Result<Ordering> {
        check_target(entity_type, project_id)?;
        let saved = self
            .reader()?
            .get(Collection::Orderings, &key(entity_type, project_id))?;
        Ok(saved.unwrap_or_else(|| Ordering {
            project_id: project_id.to_owned(),
            entity_type: entity_type.to_owned(),
            ordered_ids: Vec::new(),
            updated_at: 0,
        }))
    }

    /// Replaces the ordering with `orderedIds` (required; every item must be a valid id).
    pub async fn set_ordering(
        &self,
        entity_type: String,
        project_id: String,
        req: UpdateOrdering,
    ) -> Result<Ordering> {
        check_target(&entity_type, &project_id)?;
        let ordered_ids = req
            .ordered_ids
            .ok_or_else(|| Error::validation("orderedIds must be an array"))?;
        for id in &ordered_ids {
            check_id("orderedIds", id)?;
        }
        let ordering = Ordering {
            project_id,
            entity_type,
            ordered_ids,
            updated_at: now_ms(),
        };
        transact(&*self.store, move |tx| {
            let key = key(&ordering.entity_type, &ordering.project_id);
            tx.put(
                Collection::Orderings,
                &key,
                Some(&ordering.project_id),
                &ordering,
            );
            Ok(ordering.clone())
        })
        .await
    }
}
