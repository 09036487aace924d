//! Starting points for clients that follow the event stream.
//!
//! A screen loads a snapshot, then applies events newer than the snapshot. For that the
//! snapshot must say where in each event scope it stands, and that position must be exactly
//! consistent with the data: everything here is read from one snapshot of the store
//! ([`Domain::reader`]), heads included.

use std::collections::BTreeMap;

use maestro_protocol::{Project, Session, StateSnapshot, Task};

use super::team_members::members_of;
use super::{Domain, GLOBAL, check_id, load_project};
use crate::error::Result;
use crate::ports::{Collection, ReaderExt};

impl Domain {
    /// Projects, tasks, sessions and team members — of one project, or of all — and the head
    /// `seq` of each project's scope and of the global scope.
    pub fn state_snapshot(&self, project_id: Option<&str>) -> Result<StateSnapshot> {
        if let Some(p) = project_id {
            check_id("projectId", p)?;
        }
        let mut r = self.reader()?;
        let projects: Vec<Project> = match project_id {
            Some(p) => vec![load_project(&mut *r, p)?],
            None => r.list(Collection::Projects, None)?,
        };
        let mut tasks = Vec::new();
        let mut sessions = Vec::new();
        let mut team_members = Vec::new();
        let mut seqs = BTreeMap::new();
        seqs.insert(GLOBAL.to_owned(), r.head_seq(GLOBAL)?);
        for project in &projects {
            tasks.extend(r.list::<Task>(Collection::Tasks, Some(&project.id))?);
            sessions.extend(r.list::<Session>(Collection::Sessions, Some(&project.id))?);
            team_members.extend(members_of(&mut *r, project)?);
            seqs.insert(project.id.clone(), r.head_seq(&project.id)?);
        }
        Ok(StateSnapshot {
            projects,
            tasks,
            sessions,
            team_members,
            seqs,
        })
    }
}
