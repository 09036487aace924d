//! Projects: create, read, update, delete.
//!
//! Project events (`project:*`) go to the global event scope, since a client needs them
//! before it knows which project to follow.

use maestro_protocol::ids::prefix;
use maestro_protocol::{CreateProject, Deleted, Project, Session, Task, UpdateProject};

use super::{Domain, GLOBAL, check_id, load_project, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, TxnExt, transact};
use crate::util::{new_id, now_ms};

impl Domain {
    pub async fn create_project(&self, req: CreateProject) -> Result<Project> {
        let name = required(req.name.as_deref(), "Project name is required")?;
        let machine_id = req.machine_id.filter(|m| !m.is_empty());
        if let Some(m) = &machine_id {
            check_id("machineId", m)?;
        }
        let now = now_ms();
        let project = Project {
            id: new_id(prefix::PROJECT),
            name,
            working_dir: req.working_dir.unwrap_or_default(),
            description: req.description.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            machine_id,
        };
        transact(&*self.store, move |tx| {
            // A fresh id: the commit checks it is free, without a read here.
            tx.insert(Collection::Projects, &project.id, None, &project);
            tx.emit(GLOBAL, "project:created", &project, None);
            Ok(project.clone())
        })
        .await
    }

    pub fn list_projects(&self) -> Result<Vec<Project>> {
        self.reader()?.list(Collection::Projects, None)
    }

    pub fn get_project(&self, id: &str) -> Result<Project> {
        check_id("projectId", id)?;
        load_project(&mut *self.reader()?, id)
    }

    /// Changes `name`, `workingDir`, `description` and `machineId`; other keys are ignored (upstream stored
    /// them verbatim).
    pub async fn update_project(&self, id: String, req: UpdateProject) -> Result<Project> {
        check_id("projectId", &id)?;
        if let Some(name) = &req.name
            && name.trim().is_empty()
        {
            return Err(Error::validation("Project name cannot be empty"));
        }
        if let Some(m) = req.machine_id.as_deref().filter(|m| !m.is_empty()) {
            check_id("machineId", m)?;
        }
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut project = load_project(tx, &id)?;
            if let Some(m) = &req.machine_id {
                project.machine_id = (!m.is_empty()).then(|| m.clone());
            }
            if let Some(name) = &req.name {
                project.name = name.trim().to_owned();
            }
            if let Some(dir) = &req.working_dir {
                project.working_dir = dir.clone();
            }
            if let Some(desc) = &req.description {
                project.description = desc.clone();
            }
            project.updated_at = now;
            tx.put(Collection::Projects, &id, None, &project);
            tx.emit(GLOBAL, "project:updated", &project, None);
            Ok(project)
        })
        .await
    }

    /// Deletes an empty project; one that still has tasks or sessions is refused (422).
    pub async fn delete_project(&self, id: String) -> Result<Deleted> {
        check_id("projectId", &id)?;
        transact(&*self.store, move |tx| {
            load_project(tx, &id)?;
            if !tx.list::<Task>(Collection::Tasks, Some(&id))?.is_empty() {
                return Err(Error::BusinessRule(
                    "Cannot delete project with existing tasks".into(),
                ));
            }
            if !tx
                .list::<Session>(Collection::Sessions, Some(&id))?
                .is_empty()
            {
                return Err(Error::BusinessRule(
                    "Cannot delete project with existing sessions".into(),
                ));
            }
            tx.delete(Collection::Projects, &id);
            // Answers remembered for the project's spawn keys go with it.
            let keys: Vec<String> = tx
                .list_entries_raw(Collection::Idempotency, Some(&id))?
                .into_iter()
                .map(|(key, _)| key)
                .collect();
            for key in keys {
                super::spawn::forget_answer(tx, &key);
            }
            tx.emit(
                GLOBAL,
                "project:deleted",
                &serde_json::json!({ "id": id }),
                None,
            );
            Ok(Deleted {
                success: true,
                id: id.clone(),
            })
        })
        .await
    }
}
