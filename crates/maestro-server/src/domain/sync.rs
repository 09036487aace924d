//! Starting points for clients that follow the event stream.
//!
//! A screen loads a snapshot, then applies events newer than the snapshot. For that the
//! snapshot must say where in each event scope it stands, and that position must be exactly
//! consistent with the data: nothing the heads count may be missing from the data. The local
//! backend reads from one snapshot; on Redis reads are separate round trips, so the heads are
//! read first (see [`Domain::state_snapshot`]).

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
        // Heads before the data they cover. A backend whose reads are separate round trips
        // (Redis) may see writes land between them: read in this order, such a write is in the
        // data and also after the head, so the client applies it twice (events carry whole
        // entities, so that converges); read the other way, it would be counted in the head and
        // missing from the data, and the client would never see it.
        let mut seqs = BTreeMap::new();
        seqs.insert(GLOBAL.to_owned(), r.head_seq(GLOBAL)?);
        let projects: Vec<Project> = match project_id {
            Some(p) => vec![load_project(&mut *r, p)?],
            None => r.list(Collection::Projects, None)?,
        };
        for project in &projects {
            seqs.insert(project.id.clone(), r.head_seq(&project.id)?);
        }
        let mut tasks = Vec::new();
        let mut sessions = Vec::new();
        let mut team_members = Vec::new();
        for project in &projects {
            tasks.extend(r.list::<Task>(Collection::Tasks, Some(&project.id))?);
            sessions.extend(r.list::<Session>(Collection::Sessions, Some(&project.id))?);
            team_members.extend(members_of(&mut *r, project)?);
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
