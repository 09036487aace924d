//! `maestro team-member list|get|create|edit`.

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use maestro_protocol::{AGENT_TOOLS, CreateTeamMember, MODES, TeamMember, UpdateTeamMember};

use super::context::Context;
use super::output::{CliError, CmdResult, emit, kv, table};

#[derive(Debug, Subcommand)]
pub enum TeamMemberCommand {
    /// List the project's active team members.
    List {
        /// Include archived members.
        #[arg(long)]
        all: bool,
    },
    /// Show a team member.
    Get {
        /// Team member id.
        team_member_id: String,
    },
    /// Create a team member.
    Create {
        /// The member's name.
        name: String,
        /// Role description.
        #[arg(long)]
        role: String,
        /// Avatar (an emoji).
        #[arg(long)]
        avatar: String,
        /// execute: works on tasks itself; coordinate: splits work and directs other sessions.
        #[arg(long, value_parser = PossibleValuesParser::new(MODES))]
        mode: String,
        /// Model (sonnet, opus, haiku or a native name).
        #[arg(long)]
        model: Option<String>,
        /// Agent the member runs as.
        #[arg(long, default_value = "claude-code", value_parser = PossibleValuesParser::new(AGENT_TOOLS))]
        agent_tool: String,
        /// Persona / instructions.
        #[arg(long)]
        identity: Option<String>,
    },
    /// Edit a team member.
    Edit {
        /// Team member id.
        team_member_id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New role description.
        #[arg(long)]
        role: Option<String>,
        /// New avatar (an emoji).
        #[arg(long)]
        avatar: Option<String>,
        /// New mode (execute or coordinate).
        #[arg(long, value_parser = PossibleValuesParser::new(MODES))]
        mode: Option<String>,
        /// New model (sonnet, opus, haiku or a native name).
        #[arg(long)]
        model: Option<String>,
        /// New agent.
        #[arg(long, value_parser = PossibleValuesParser::new(AGENT_TOOLS))]
        agent_tool: Option<String>,
        /// New persona / instructions.
        #[arg(long)]
        identity: Option<String>,
        /// Workflow template id (or `custom`).
        #[arg(long, value_name = "TEMPLATE_ID")]
        workflow_template: Option<String>,
        /// Workflow text, with --workflow-template custom.
        #[arg(long)]
        custom_workflow: Option<String>,
    },
}

pub async fn run(ctx: &Context, cmd: TeamMemberCommand) -> CmdResult {
    let project = ctx.project()?;
    let client = ctx.client()?;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        TeamMemberCommand::List { all } => {
            let mut members = client.list_team_members(project).await.map_err(e)?;
            if !all {
                members.retain(|m| m.status == "active");
            }
            emit(ctx.json, &members, || {
                if members.is_empty() {
                    say!("No team members found.");
                    return;
                }
                let rows: Vec<_> = members
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            format!("{} {}", m.avatar, m.name),
                            m.role.clone(),
                            m.mode.clone().unwrap_or_else(|| "execute".into()),
                            if m.is_default { "yes" } else { "no" }.into(),
                        ]
                    })
                    .collect();
                table(&["ID", "Name", "Role", "Mode", "Default"], &rows);
            });
        }
        TeamMemberCommand::Get { team_member_id } => {
            let m = client
                .get_team_member(&team_member_id, project)
                .await
                .map_err(e)?;
            emit(ctx.json, &m, || show(&m));
        }
        TeamMemberCommand::Create {
            name,
            role,
            avatar,
            mode,
            model,
            agent_tool,
            identity,
        } => {
            let req = CreateTeamMember {
                project_id: Some(project.to_owned()),
                name: Some(name.trim().to_owned()),
                role: Some(role.trim().to_owned()),
                avatar: Some(avatar.trim().to_owned()),
                mode: Some(mode),
                model,
                agent_tool: Some(agent_tool),
                identity: Some(identity.map(|i| i.trim().to_owned()).unwrap_or_default()),
                ..Default::default()
            };
            let m = client.create_team_member(&req).await.map_err(e)?;
            emit(ctx.json, &m, || show(&m));
        }
        TeamMemberCommand::Edit {
            team_member_id,
            name,
            role,
            avatar,
            mode,
            model,
            agent_tool,
            identity,
            workflow_template,
            custom_workflow,
        } => {
            let trim = |v: Option<String>| v.map(|s| s.trim().to_owned());
            let req = UpdateTeamMember {
                project_id: Some(project.to_owned()),
                name: trim(name),
                role: trim(role),
                avatar: trim(avatar),
                mode,
                model,
                agent_tool,
                identity: trim(identity),
                workflow_template_id: workflow_template,
                custom_workflow: trim(custom_workflow),
                ..Default::default()
            };
            let nothing = req.name.is_none()
                && req.role.is_none()
                && req.avatar.is_none()
                && req.mode.is_none()
                && req.model.is_none()
                && req.agent_tool.is_none()
                && req.identity.is_none()
                && req.workflow_template_id.is_none()
                && req.custom_workflow.is_none();
            if nothing {
                return Err(CliError::usage(
                    "No fields to update: pass at least one of --name, --role, --avatar, --mode, \
                     --model, --agent-tool, --identity, --workflow-template, --custom-workflow.",
                ));
            }
            let m = client
                .update_team_member(&team_member_id, &req)
                .await
                .map_err(e)?;
            emit(ctx.json, &m, || show(&m));
        }
    }
    Ok(())
}

fn show(m: &TeamMember) {
    kv("ID", &m.id);
    kv("Name", format!("{} {}", m.avatar, m.name));
    kv("Role", &m.role);
    kv("Mode", m.mode.as_deref().unwrap_or("execute"));
    kv("Model", m.model.as_deref().unwrap_or("sonnet"));
    kv(
        "Agent Tool",
        m.agent_tool.as_deref().unwrap_or("claude-code"),
    );
    kv("Default", if m.is_default { "yes" } else { "no" });
    kv("Status", &m.status);
    if !m.identity.is_empty() {
        kv("Identity", &m.identity);
    }
    if let Some(w) = &m.workflow_template_id {
        kv("Workflow Template", w);
    }
}
