//! Team members: five built-in personas per project plus the project's own.
//!
//! Built-ins are not stored: they are derived from the project on every read, with the
//! project's creation time as theirs, and an override record (stored under the built-in's id)
//! merged on top once someone edits one. Custom members are stored entities.

use maestro_protocol::ids::prefix;
use maestro_protocol::{
    AGENT_TOOLS, Capabilities, CreateTeamMember, DEFAULT_MEMBER_KINDS, Deleted, MODES, Project,
    TEAM_MEMBER_STATUSES, TeamMember, UpdateTeamMember,
};
use serde_json::json;

use super::{Domain, check_enum, check_id, load_project, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, Reader, ReaderExt, TxnExt, transact};
use crate::util::{iso8601, new_id, now_ms};

/// The id of a project's built-in member of `kind`.
pub fn default_member_id(project_id: &str, kind: &str) -> String {
    format!("tm_{project_id}_{kind}")
}

/// The built-in member of `kind` for `project`, as shipped (no override).
fn builtin(project: &Project, kind: &str) -> TeamMember {
    let (name, role, avatar, mode, spawns, template, identity) = match kind {
        "simple_worker" => (
            "Simple Worker",
            "Default executor",
            "⚡",
            "execute",
            false,
            "execute-simple",
            "You take one task at a time, do exactly what it asks, and report progress and results as you go.",
        ),
        "coordinator" => (
            "Coordinator",
            "Task orchestrator",
            "🎯",
            "coordinate",
            true,
            "coordinate-default",
            "You split large goals into clear subtasks, hand them to workers, and check their results before calling the goal done.",
        ),
        "batch_coordinator" => (
            "Batch Coordinator",
            "Intelligent batch orchestrator",
            "📦",
            "coordinate",
            true,
            "coordinate-batching",
            "You group independent subtasks into batches that run side by side, and start the next batch only when the current one is verified.",
        ),
        "dag_coordinator" => (
            "DAG Coordinator",
            "DAG-based orchestrator",
            "🔀",
            "coordinate",
            true,
            "coordinate-dag",
            "You map how subtasks depend on each other and launch each one as soon as everything it needs is finished.",
        ),
        _ => (
            "Recruiter",
            "Team member recruiter",
            "🔍",
            "execute",
            false,
            "execute-recruit",
            "You study what the project needs and add team members whose skills and instructions fit the work.",
        ),
    };
    let created = iso8601(project.created_at);
    TeamMember {
        id: default_member_id(&project.id, kind),
        project_id: project.id.clone(),
        name: name.into(),
        role: role.into(),
        identity: identity.into(),
        avatar: avatar.into(),
        model: Some("sonnet".into()),
        agent_tool: Some("claude-code".into()),
        mode: Some(mode.into()),
        skill_ids: Vec::new(),
        is_default: true,
        status: "active".into(),
        capabilities: Some(Capabilities {
            can_spawn_sessions: Some(spawns),
            can_edit_tasks: Some(true),
            can_report_task_level: Some(true),
            can_report_session_level: Some(true),
        }),
        command_permissions: (kind == "recruiter").then(|| {
            json!({ "commands": {
                "team-member:create": true,
                "team-member:list": true,
                "team-member:get": true,
            }})
        }),
        workflow_template_id: Some(template.into()),
        custom_workflow: None,
        created_at: created.clone(),
        updated_at: created,
    }
}

/// The built-in member of `kind`, for importing upstream overrides.
pub(crate) fn builtin_for_import(project: &Project, kind: &str) -> TeamMember {
    builtin(project, kind)
}

/// The kind of built-in `id` is, for `project_id`.
fn default_kind(project_id: &str, id: &str) -> Option<&'static str> {
    DEFAULT_MEMBER_KINDS
        .iter()
        .copied()
        .find(|kind| default_member_id(project_id, kind) == id)
}

/// Loads a member of `project_id`: a built-in (override applied) or a custom one.
pub(crate) fn load_member(
    r: &mut (impl Reader + ?Sized),
    project_id: &str,
    id: &str,
) -> Result<TeamMember> {
    let project = load_project(r, project_id)?;
    let stored: Option<TeamMember> = r.get(Collection::TeamMembers, id)?;
    if let Some(kind) = default_kind(project_id, id) {
        return Ok(stored.unwrap_or_else(|| builtin(&project, kind)));
    }
    match stored {
        Some(m) if m.project_id == project_id => Ok(m),
        _ => Err(Error::not_found("Team member", id)),
    }
}

/// The members of `project` as of `r`: the five built-ins (in their fixed order, overrides
/// applied) followed by custom members, archived included.
pub(crate) fn members_of(
    r: &mut (impl Reader + ?Sized),
    project: &Project,
) -> Result<Vec<TeamMember>> {
    let stored: Vec<TeamMember> = r.list(Collection::TeamMembers, Some(&project.id))?;
    let mut out: Vec<TeamMember> = DEFAULT_MEMBER_KINDS
        .iter()
        .map(|kind| {
            let id = default_member_id(&project.id, kind);
            stored
                .iter()
                .find(|m| m.id == id)
                .cloned()
                .unwrap_or_else(|| builtin(project, kind))
        })
        .collect();
    out.extend(stored.into_iter().filter(|m| !m.is_default));
    Ok(out)
}

fn validate_fields(
    mode: Option<&String>,
    agent_tool: Option<&String>,
    skill_ids: Option<&Vec<String>>,
) -> Result<()> {
    if let Some(m) = mode {
        check_enum("mode", m, MODES)?;
    }
    if let Some(t) = agent_tool {
        check_enum("agentTool", t, AGENT_TOOLS)?;
    }
    for s in skill_ids.into_iter().flatten() {
        check_id("skillIds", s)?;
    }
    Ok(())
}

fn project_param(project_id: Option<&str>) -> Result<String> {
    let p = required(project_id, "projectId is required")?;
    check_id("projectId", &p)?;
    Ok(p)
}

impl Domain {
    /// The five built-ins (in their fixed order) followed by custom members, archived included.
    pub fn list_team_members(&self, project_id: Option<&str>) -> Result<Vec<TeamMember>> {
        let project_id = project_param(project_id)?;
        let mut r = self.reader()?;
        let project = load_project(&mut *r, &project_id)?;
        members_of(&mut *r, &project)
    }

    pub fn get_team_member(&self, id: &str, project_id: Option<&str>) -> Result<TeamMember> {
        check_id("id", id)?;
        let project_id = project_param(project_id)?;
        load_member(&mut *self.reader()?, &project_id, id)
    }

    pub async fn create_team_member(&self, req: CreateTeamMember) -> Result<TeamMember> {
        let project_id = project_param(req.project_id.as_deref())?;
        let name = required(req.name.as_deref(), "name is required")?;
        let role = required(req.role.as_deref(), "role is required")?;
        let avatar = required(req.avatar.as_deref(), "avatar is required")?;
        validate_fields(
            req.mode.as_ref(),
            req.agent_tool.as_ref(),
            req.skill_ids.as_ref(),
        )?;
        let now = iso8601(now_ms());
        let member = TeamMember {
            id: new_id(prefix::TEAM_MEMBER),
            project_id: project_id.clone(),
            name,
            role,
            identity: req
                .identity
                .as_deref()
                .map(str::trim)
                .unwrap_or("")
                .to_owned(),
            avatar,
            model: req.model.clone(),
            agent_tool: req.agent_tool.clone(),
            mode: req.mode.clone(),
            skill_ids: req.skill_ids.clone().unwrap_or_default(),
            is_default: false,
            status: "active".into(),
            capabilities: req.capabilities.clone(),
            command_permissions: req.command_permissions.clone(),
            workflow_template_id: req.workflow_template_id.clone(),
            custom_workflow: req.custom_workflow.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        transact(&*self.store, move |tx| {
            // Existence checks by the commit, without reads here.
            tx.require(Collection::Projects, &project_id, "Project");
            tx.insert(
                Collection::TeamMembers,
                &member.id,
                Some(&project_id),
                &member,
            );
            tx.emit(&project_id, "team_member:created", &member, None);
            Ok(member.clone())
        })
        .await
    }

    /// Edits a member; for a built-in this stores (or extends) its override.
    pub async fn update_team_member(
        &self,
        id: String,
        req: UpdateTeamMember,
    ) -> Result<TeamMember> {
        check_id("id", &id)?;
        let project_id = project_param(req.project_id.as_deref())?;
        for (field, value) in [
            ("name", &req.name),
            ("role", &req.role),
            ("avatar", &req.avatar),
        ] {
            if let Some(v) = value
                && v.trim().is_empty()
            {
                return Err(Error::validation(format!("{field} cannot be empty")));
            }
        }
        validate_fields(
            req.mode.as_ref(),
            req.agent_tool.as_ref(),
            req.skill_ids.as_ref(),
        )?;
        if let Some(s) = &req.status {
            check_enum("status", s, TEAM_MEMBER_STATUSES)?;
        }
        let now = iso8601(now_ms());
        transact(&*self.store, move |tx| {
            let mut m = load_member(tx, &project_id, &id)?;
            let trim = |v: &Option<String>| v.as_deref().map(|s| s.trim().to_owned());
            if let Some(v) = trim(&req.name) {
                m.name = v;
            }
            if let Some(v) = trim(&req.role) {
                m.role = v;
            }
            if let Some(v) = trim(&req.avatar) {
                m.avatar = v;
            }
            if let Some(v) = trim(&req.identity) {
                m.identity = v;
            }
            for (field, value) in [
                (&mut m.model, &req.model),
                (&mut m.agent_tool, &req.agent_tool),
                (&mut m.mode, &req.mode),
                (&mut m.workflow_template_id, &req.workflow_template_id),
                (&mut m.custom_workflow, &req.custom_workflow),
            ] {
                if value.is_some() {
                    field.clone_from(value);
                }
            }
            if let Some(v) = &req.skill_ids {
                m.skill_ids = v.clone();
            }
            if let Some(v) = &req.status {
                m.status = v.clone();
            }
            if req.capabilities.is_some() {
                m.capabilities.clone_from(&req.capabilities);
            }
            if req.command_permissions.is_some() {
                m.command_permissions.clone_from(&req.command_permissions);
            }
            m.updated_at = now.clone();
            tx.put(Collection::TeamMembers, &id, Some(&project_id), &m);
            tx.emit(&project_id, "team_member:updated", &m, None);
            Ok(m)
        })
        .await
    }

    /// Deletes a custom member; it must be archived first (422), built-ins cannot go (403).
    pub async fn delete_team_member(
        &self,
        id: String,
        project_id: Option<&str>,
    ) -> Result<Deleted> {
        check_id("id", &id)?;
        let project_id = project_param(project_id)?;
        transact(&*self.store, move |tx| {
            let m = load_member(tx, &project_id, &id)?;
            if m.is_default {
                return Err(Error::Forbidden(
                    "Cannot delete a default team member".into(),
                ));
            }
            if m.status != "archived" {
                return Err(Error::BusinessRule(
                    "Team member must be archived before it can be deleted".into(),
                ));
            }
            tx.delete(Collection::TeamMembers, &id);
            tx.emit(
                &project_id,
                "team_member:deleted",
                &json!({ "id": id }),
                None,
            );
            Ok(Deleted {
                success: true,
                id: id.clone(),
            })
        })
        .await
    }

    /// Archives (`archived = true`) or restores a custom member. Already in that state: returned
    /// unchanged, no event.
    pub async fn set_team_member_archived(
        &self,
        id: String,
        project_id: Option<&str>,
        archived: bool,
    ) -> Result<TeamMember> {
        check_id("id", &id)?;
        let project_id = project_param(project_id)?;
        let now = iso8601(now_ms());
        transact(&*self.store, move |tx| {
            let mut m = load_member(tx, &project_id, &id)?;
            if m.is_default {
                let verb = if archived { "archive" } else { "unarchive" };
                return Err(Error::Forbidden(format!(
                    "Cannot {verb} a default team member"
                )));
            }
            let target = if archived { "archived" } else { "active" };
            if m.status == target {
                return Ok(m);
            }
            m.status = target.into();
            m.updated_at = now.clone();
            tx.put(Collection::TeamMembers, &id, Some(&project_id), &m);
            let event = if archived {
                "team_member:archived"
            } else {
                "team_member:updated"
            };
            tx.emit(&project_id, event, &m, None);
            Ok(m)
        })
        .await
    }

    /// Drops a built-in's override, restoring it as shipped.
    pub async fn reset_team_member(
        &self,
        id: String,
        project_id: Option<&str>,
    ) -> Result<TeamMember> {
        check_id("id", &id)?;
        let project_id = project_param(project_id)?;
        transact(&*self.store, move |tx| {
            let project = load_project(tx, &project_id)?;
            let Some(kind) = default_kind(&project_id, &id) else {
                load_member(tx, &project_id, &id)?;
                return Err(Error::not_found("Default team member", &id));
            };
            tx.delete(Collection::TeamMembers, &id);
            let m = builtin(&project, kind);
            tx.emit(&project_id, "team_member:updated", &m, None);
            Ok(m)
        })
        .await
    }
}
